# shellcheck shell=bash
# lib.sh - what run.sh and ab.sh share. Sourced, not run.

wait_listen() {	# PORT...: wait until each is listening (10 s)
	local p
	for p in "$@"; do
		for _ in $(seq 100); do
			ss -ltnH "sport = :$p" 2>/dev/null | grep -q . && continue 2
			sleep 0.1
		done
		return 1
	done
}

# FIRST LAST: true when no port of 127.0.0.1 in that range listens; says
# which one does otherwise (a peer left from an earlier run would answer
# in place of the one started now, and its CPU would go uncounted).
ports_free() {
	local busy
	busy=$(ss -ltnH "( sport >= :$1 and sport <= :$2 )" 2>/dev/null | head -3)
	[ -z "$busy" ] && return 0
	echo "ports $1-$2 must be free; in use:" >&2
	echo "$busy" >&2
	return 1
}

# A moat configuration for benchmarks, in pieces: moat_conf_head DIR CERT
# KEY WORKERS, then moat_listener per listener, then moat_conf_tail.
# Every address is one client here: no session cap, no reserve for other
# addresses, no rate limit, no firewall and no event file (peers have
# none of these), and no log lines per session (the peers are set to log
# only warnings and errors as well).
moat_conf_head() {
	cat <<-EOF
	[daemon]
	workers = $4
	max_sessions = 0
	reserved_sessions = 0
	control_socket = "$1/moat.sock"
	state_file = "$1/moat.state"
	drain_timeout = "1s"
	log_level = "warning"

	[tls]
	certificate = "$2"
	key = "$3"
	min_version = "1.3"
	EOF
}

moat_listener() {	# NAME PORT PROTO TLS BACKEND_PORT
	cat <<-EOF

	[[listener]]
	name = "$1"
	listen = ["127.0.0.1:$2"]
	protocol = "$3"
	tls = "$4"
	backend = "127.0.0.1:$5"
	backend_proxy = "none"
	timeouts = { handshake = "10s", idle = "10m", connect = "5s" }
	EOF
}

moat_conf_tail() {
	cat <<-EOF

	[policy.rate]
	connections = { limit = 0, window = "1m" }
	concurrent_per_ip = 0
	auth_failures = { limit = 0, window = "1m" }

	[firewall]
	backend = "none"

	[events]
	file = ""
	EOF
}
