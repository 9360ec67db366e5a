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

# NAME FIRST LAST: what ab.sh and fair.sh start with. Checks that ports
# FIRST-LAST are free, makes the work directory W (removed at exit, with
# every process in PIDS killed) and an ECDSA certificate in it
# (W/cert.pem, W/key.pem).
bench_setup() {
	ports_free "$2" "$3" || { echo "$1: stop what holds them" >&2; exit 2; }
	W=$(mktemp -d "/tmp/moat-$1.XXXXXX")
	PIDS=()
	trap bench_cleanup EXIT
	trap 'exit 1' INT TERM
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
	    -keyout "$W/key.pem" -out "$W/cert.pem" -days 2 \
	    -subj /CN=bench.invalid >/dev/null 2>&1 ||
		{ echo "$1: openssl could not make a certificate" >&2; exit 1; }
}

bench_cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	rm -rf "$W"
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
