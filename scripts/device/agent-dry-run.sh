#!/usr/bin/env bash
# `freesh agent --dry-run` with the nvidia-smi driver on a real GPU while a PyTorch decode workload
# runs (scripts/device/decode-power.py at three batch sizes). Read-only on the GPU: the agent runs in
# dry-run, and a guard `nvidia-smi` ahead of the real one on PATH refuses (and records) any argument
# that would change a setting, so even a bug could not lock or reset a clock on a shared machine.
# Needs, carried in .device/: node.xz (a Node 20 binary), bundle.tar.xz (dist/, models/ and the production node_modules the
# agent imports). Writes under $OUT: agent.log, smi-calls.log, guard.log (refusals, if any),
# metrics.txt (the agent's /metrics every 10 s), workload.log.
set -uo pipefail
OUT=${OUT:-/tmp/agent-dry-run}
mkdir -p "$OUT" /tmp/freesh-agent/bin /tmp/freesh-agent/guard
xz -dc .device/node.xz > /tmp/freesh-agent/bin/node && chmod +x /tmp/freesh-agent/bin/node
tar -xJf .device/bundle.tar.xz -C /tmp/freesh-agent
REAL_SMI=$(command -v nvidia-smi)
cat > /tmp/freesh-agent/guard/nvidia-smi <<GUARD
#!/bin/sh
for a in "\$@"; do
  case "\$a" in
    -lgc|-rgc|-lmc|-rmc|-ac|-rac|-pl|-pm|-r|-c|-e|-mig|--lock-gpu-clocks*|--reset-gpu-clocks|--lock-memory-clocks*|--reset-memory-clocks|--applications-clocks*|--reset-applications-clocks|--power-limit*|--persistence-mode*|--gpu-reset|--compute-mode*)
      echo "\$(date +%s.%N) REFUSED \$*" >> "$OUT/guard.log"; exit 3;;
  esac
done
echo "\$(date +%s.%N) \$*" >> "$OUT/smi-calls.log"
exec "$REAL_SMI" "\$@"
GUARD
chmod +x /tmp/freesh-agent/guard/nvidia-smi
export PATH=/tmp/freesh-agent/guard:$PATH
/tmp/freesh-agent/bin/node --version
cd /tmp/freesh-agent
./bin/node dist/src/cli.js agent --node h200 --gpus 0 --driver nvidia-smi --dry-run --metrics-port 9401 > "$OUT/agent.log" 2>&1 &
AGENT=$!
cd - >/dev/null
sleep 4
( for i in $(seq 1 12); do sleep 10; echo "=== sample $i at $(date +%s)"; curl -s localhost:9401/metrics 2>/dev/null || python3 -c "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:9401/metrics').read().decode())"; done ) > "$OUT/metrics.txt" 2>&1 &
SAMPLER=$!
BATCHES=1,32,256 IDLE_S=5 LOADED_IDLE_S=5 WARM_S=2 MEAS_S=15 OUT=/tmp/workload timeout 300 python3 scripts/device/decode-power.py > "$OUT/workload.log" 2>&1
kill $SAMPLER 2>/dev/null
kill -TERM $AGENT; wait $AGENT; echo "agent exit $?" >> "$OUT/agent.log"
ls -la "$OUT"; tail -5 "$OUT/agent.log"; cat "$OUT/guard.log" 2>/dev/null || echo "guard: nothing refused"
