"""contrib/ files that operators load elsewhere stay true to the daemon."""
import json
import os
import re

SOURCE = os.environ.get("MOAT_SOURCE_ROOT", ".")


def test_grafana_dashboard_uses_only_real_metrics():
    with open(os.path.join(SOURCE, "contrib", "grafana",
                           "moat-dashboard.json")) as f:
        dash = json.load(f)
    with open(os.path.join(SOURCE, "proxy", "metrics.c")) as f:
        exported = set(re.findall(r'"(moat_[a-z_]+)', f.read()))
    used = set()
    for panel in dash["panels"]:
        for target in panel["targets"]:
            used |= set(re.findall(r"\b(moat_[a-z_]+)", target["expr"]))
    assert used, "the dashboard queries nothing"
    # Histograms are exported as NAME and scraped as NAME_bucket.
    missing = {m for m in used
               if m not in exported and m.removesuffix("_bucket") not in exported}
    assert not missing, f"dashboard queries unknown metrics: {missing}"
