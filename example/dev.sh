#!/usr/bin/env bash
# make dev: a Nomad dev agent on 127.0.0.1 with the freshly built plugin and a warm
# pool, then the example sandbox job with its output and start time. The agent runs
# until Ctrl-C; everything started here is stopped by its process id on exit.
set -euo pipefail

nomad_bin=${1:-nomad}
plugin_dir=${2:?usage: dev.sh NOMAD PLUGIN_DIR}
repo=$(cd "$(dirname "$0")/.." && pwd)

if ! command -v "$nomad_bin" >/dev/null 2>&1; then
  echo "make dev needs a nomad binary (a release README's Compatibility lists): put it on PATH (or set NOMAD_BIN=/path/to/nomad)" >&2
  exit 1
fi
nomad_bin=$(command -v "$nomad_bin")

work=$(mktemp -d /tmp/agentkernel-pool-dev.XXXXXX)
port=${NOMAD_DEV_PORT:-4646}
export NOMAD_ADDR="http://127.0.0.1:${port}"
export NOMAD_CLI_SHOW_HINTS=0
agent_pid=

cleanup() {
  if [ -n "$agent_pid" ] && kill -0 "$agent_pid" 2>/dev/null; then
    echo "==> stopping the Nomad agent (pid $agent_pid)"
    kill -INT "$agent_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$agent_pid" 2>/dev/null || break; sleep 0.1; done
    # The agent's group holds its plugin and task processes: end them too.
    kill -KILL -- "-$agent_pid" 2>/dev/null || true
  fi
  rm -rf "$work" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cat >"$work/agent.hcl" <<EOF
data_dir   = "$work/data"
bind_addr  = "127.0.0.1"
plugin_dir = "$plugin_dir"
ports {
  http = $port
}
client {
  options = {
    "fingerprint.denylist" = "env_aws,env_gce,env_azure,env_digitalocean"
  }
}
plugin "raw_exec" {
  config {
    enabled = true
  }
}
plugin "agentkernel-pool" {
  config {
    address = "$NOMAD_ADDR"
    pool "dev" {
      jobspec = "$repo/example/pools/raw_exec.nomad.hcl"
      size    = 2
      max     = 8
    }
  }
}
EOF

echo "==> starting a Nomad dev agent on $NOMAD_ADDR (log: $work/agent.log)"
# TMPDIR inside $work: the unix sockets of the agent's plugins go with it.
mkdir -p "$work/tmp"
TMPDIR="$work/tmp" setsid "$nomad_bin" agent -dev -config="$work/agent.hcl" >"$work/agent.log" 2>&1 &
agent_pid=$!

attr() { "$nomad_bin" node status -self -verbose 2>/dev/null | awk -v k="$1" '$1 == k {print $3}'; }

printf '==> waiting for the warm pool'
for _ in $(seq 1 240); do
  kill -0 "$agent_pid" 2>/dev/null || { echo; echo "the agent exited; last lines of its log:" >&2; tail -20 "$work/agent.log" >&2; exit 1; }
  warm=$(attr driver.agentkernel-pool.pool.dev.warm || true)
  [ "${warm:-0}" -ge 2 ] 2>/dev/null && break
  printf '.'; sleep 0.5
done
echo " warm=${warm:-0}"
if [ "${warm:-0}" -lt 1 ] 2>/dev/null; then
  echo "the pool did not fill; driver health:" >&2
  "$nomad_bin" node status -self -verbose | grep -A3 -i agentkernel >&2 || true
  exit 1
fi

echo "==> running example/jobs/hello.nomad.hcl"
start=$(date +%s%N)
"$nomad_bin" job run -detach "$repo/example/jobs/hello.nomad.hcl" >/dev/null
alloc=
out=
for _ in $(seq 1 600); do
  [ -n "$alloc" ] || alloc=$("$nomad_bin" job allocs -t '{{range .}}{{.ID}}{{end}}' hello-sandbox 2>/dev/null || true)
  if [ -n "$alloc" ]; then
    out=$("$nomad_bin" alloc logs "$alloc" agent 2>/dev/null || true)
    [ -n "$out" ] && break
  fi
  sleep 0.01
done
end=$(date +%s%N)
echo "$out" | sed 's/^/    /'
echo "==> registration to first output: $(((end - start) / 1000000)) ms (this includes the CLI's own polling)"
# The server learns the task's events a moment after the output exists.
for _ in $(seq 1 100); do
  case $("$nomad_bin" alloc status -t '{{.ClientStatus}}' "$alloc" 2>/dev/null) in complete|failed) break ;; esac
  sleep 0.1
done
"$nomad_bin" alloc status "$alloc" | sed -n '/Recent Events/,$p' | sed 's/^/    /'

echo "==> the agent keeps running: try 'NOMAD_ADDR=$NOMAD_ADDR nomad job run $repo/example/jobs/idle.nomad.hcl'"
echo "    and 'nomad alloc exec -task agent <alloc id> /bin/sh'. Ctrl-C stops everything."
wait "$agent_pid"
