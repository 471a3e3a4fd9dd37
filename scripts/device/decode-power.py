#!/usr/bin/env python3
"""Decode-shaped power sweep on one NVIDIA GPU (written for the H200 lent through the device tool).

Measures GPU power and energy per token of a synthetic, memory-bound LLM decode step at batch sizes
1..256, plus idle power. READ-ONLY on the GPU's settings: it never changes clocks, power limits,
persistence or application clocks; it only reads NVML (pynvml) and `nvidia-smi --query-gpu`.

Workload (one "decode step"): L layers shaped like Llama-3-70B (d=8192, 64 query heads, 8 KV heads of
128, FFN 28672, SwiGLU), bf16, each layer: RMSNorm, QKV projection, write of the new K/V into the
cache, attention over a KV cache of CTX tokens per sequence as batched matmuls (q·Kᵀ, softmax, ·V),
output projection, RMSNorm, gate/up projection, SiLU·up, down projection, residual adds. The whole
step is captured in one CUDA graph and replayed back to back. With L=10 the weights are 17.1 GB and
the KV read per sequence per step is 10 layers x 8 heads x CTX tokens, i.e. the bytes one GPU of an
8-way tensor-parallel Llama-3-70B reads per step (80 layers x 1 KV head), without the all-reduces.

Outputs under $OUT: results.json, results.csv, nvml-samples.csv, smi-samples.csv, nvidia-smi.txt.
"""
import csv
import datetime
import json
import math
import os
import subprocess
import sys
import threading
import time

OUT = os.environ.get('OUT') or '/tmp/decode-power-out'
os.makedirs(OUT, exist_ok=True)

BATCHES = [int(b) for b in os.environ.get('BATCHES', '1,2,4,8,16,32,64,128,256').split(',')]
IDLE_S = float(os.environ.get('IDLE_S', '20'))
LOADED_IDLE_S = float(os.environ.get('LOADED_IDLE_S', '10'))
WARM_S = float(os.environ.get('WARM_S', '4'))
MEAS_S = float(os.environ.get('MEAS_S', '16'))
LAYERS = int(os.environ.get('LAYERS', '10'))
CTX = int(os.environ.get('CTX', '1536'))
D, FF, HQ, HKV, HD = 8192, 28672, 64, 8, 128

T_START = time.monotonic()


def log(*a):
    print(f'[{time.monotonic() - T_START:7.1f}s]', *a, flush=True)


def sh(cmd, timeout=60):
    try:
        r = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=timeout)
        return r.stdout + (('\n[stderr] ' + r.stderr) if r.stderr.strip() else '')
    except Exception as e:  # noqa: BLE001
        return f'[error running {cmd!r}: {e}]'


smi_txt = open(os.path.join(OUT, 'nvidia-smi.txt'), 'w')


def snap(title, cmd):
    smi_txt.write(f'===== {title}: $ {cmd}\n{sh(cmd)}\n')
    smi_txt.flush()


snap('before', 'nvidia-smi')
snap('before', 'nvidia-smi -q')
snap('query fields with power/energy', "nvidia-smi --help-query-gpu | grep -iE -A2 'power|energy' | head -80")

# ---------------------------------------------------------------- NVML (read-only)
nv = None
H = None
try:
    import pynvml as nv  # from nvidia-ml-py
    nv.nvmlInit()
    H = nv.nvmlDeviceGetHandleByIndex(0)
except Exception as e:  # noqa: BLE001
    log('NVML unavailable:', e)
    nv = None


def nv_try(fn, *a, default=None):
    if nv is None:
        return default
    try:
        return getattr(nv, fn)(*a)
    except Exception:  # noqa: BLE001
        return default


def energy_mj():
    return nv_try('nvmlDeviceGetTotalEnergyConsumption', H)


FI_INSTANT = getattr(nv, 'NVML_FI_DEV_POWER_INSTANT', None) if nv else None


def instant_mw():
    if FI_INSTANT is None:
        return None
    try:
        v = nv.nvmlDeviceGetFieldValues(H, [FI_INSTANT])[0]
        if v.nvmlReturn != 0:
            return None
        return int(v.value.uiVal)
    except Exception:  # noqa: BLE001
        return None


def reasons():
    r = nv_try('nvmlDeviceGetCurrentClocksEventReasons', H)
    if r is None:
        r = nv_try('nvmlDeviceGetCurrentClocksThrottleReasons', H)
    return r


gpu_info = {}
if nv is not None:
    def s(x):
        return x.decode() if isinstance(x, bytes) else x
    gpu_info = {
        'name': s(nv_try('nvmlDeviceGetName', H)),
        'driver': s(nv_try('nvmlSystemGetDriverVersion')),
        'nvmlVersion': s(nv_try('nvmlSystemGetNVMLVersion')),
        'enforcedPowerLimitW': (nv_try('nvmlDeviceGetEnforcedPowerLimit', H) or 0) / 1000,
        'powerLimitDefaultW': (nv_try('nvmlDeviceGetPowerManagementDefaultLimit', H) or 0) / 1000,
        'maxSmClockMHz': nv_try('nvmlDeviceGetMaxClockInfo', H, getattr(nv, 'NVML_CLOCK_SM', 1)),
        'maxMemClockMHz': nv_try('nvmlDeviceGetMaxClockInfo', H, getattr(nv, 'NVML_CLOCK_MEM', 2)),
        'persistenceMode': nv_try('nvmlDeviceGetPersistenceMode', H),
        'energyCounterWorks': energy_mj() is not None,
        'instantPowerFieldWorks': instant_mw() is not None,
    }
log('gpu', gpu_info)


class NvmlSampler(threading.Thread):
    """Reads power (averaged and instant), the energy counter, clocks and temperature every PERIOD s."""

    def __init__(self, period=0.02):
        super().__init__(daemon=True)
        self.period = period
        self.rows = []
        self.halt = threading.Event()

    def run(self):
        i = 0
        while not self.halt.is_set():
            t = time.monotonic()
            row = {'t': t, 'powerMW': nv_try('nvmlDeviceGetPowerUsage', H), 'instantMW': instant_mw(), 'energyMJ': energy_mj()}
            if i % 10 == 0:
                row['smMHz'] = nv_try('nvmlDeviceGetClockInfo', H, getattr(nv, 'NVML_CLOCK_SM', 1))
                row['memMHz'] = nv_try('nvmlDeviceGetClockInfo', H, getattr(nv, 'NVML_CLOCK_MEM', 2))
                row['tempC'] = nv_try('nvmlDeviceGetTemperature', H, getattr(nv, 'NVML_TEMPERATURE_GPU', 0))
                row['reasons'] = reasons()
            self.rows.append(row)
            i += 1
            self.halt.wait(max(0.0, self.period - (time.monotonic() - t)))


sampler = NvmlSampler()
if nv is not None:
    sampler.start()

# nvidia-smi sampling in the background, 100 ms, as an independent record.
smi_fields = 'timestamp,power.draw,power.draw.instant,power.draw.average,clocks.sm,clocks.mem,temperature.gpu,temperature.memory,utilization.gpu,clocks_event_reasons.active'
probe = sh(f'nvidia-smi --query-gpu={smi_fields} --format=csv,noheader')
if 'Field' in probe or 'not a valid' in probe.lower() or 'error' in probe.lower():
    smi_fields = 'timestamp,power.draw,clocks.sm,clocks.mem,temperature.gpu,utilization.gpu'
smi_log = open(os.path.join(OUT, 'smi-samples.csv'), 'w')
smi_proc = subprocess.Popen(['nvidia-smi', f'--query-gpu={smi_fields}', '--format=csv', '-lms', '100'], stdout=smi_log, stderr=subprocess.STDOUT)

phases = []  # (name, t0, t1, e0_mJ, e1_mJ, extra)


def window_stats(t0, t1):
    rows = [r for r in sampler.rows if t0 <= r['t'] <= t1]
    def mean(k, scale=1.0):
        v = [r[k] for r in rows if r.get(k) is not None]
        return (sum(v) / len(v) * scale) if v else None
    def mx(k):
        v = [r[k] for r in rows if r.get(k) is not None]
        return max(v) if v else None
    rs = 0
    for r in rows:
        if r.get('reasons'):
            rs |= r['reasons']
    return {
        'samples': len(rows),
        'sampledPowerW': mean('powerMW', 1e-3),
        'sampledInstantW': mean('instantMW', 1e-3),
        'maxInstantW': (mx('instantMW') or 0) * 1e-3 or None,
        'smMHz': mean('smMHz'),
        'memMHz': mean('memMHz'),
        'tempC': mean('tempC'),
        'maxTempC': mx('tempC'),
        'clockEventReasonsOr': hex(rs),
    }


def power_of(t0, t1, e0, e1):
    if e0 is not None and e1 is not None and t1 > t0:
        return (e1 - e0) / 1000 / (t1 - t0), 'energy-counter'
    st = window_stats(t0, t1)
    return st['sampledInstantW'] or st['sampledPowerW'], 'sampled'


def idle_phase(name, secs):
    log(f'{name}: {secs:.0f} s, nothing running')
    time.sleep(1.0)
    t0, e0 = time.monotonic(), energy_mj()
    time.sleep(secs)
    t1, e1 = time.monotonic(), energy_mj()
    p, how = power_of(t0, t1, e0, e1)
    rec = {'phase': name, 'seconds': t1 - t0, 'powerW': p, 'method': how, **window_stats(t0, t1)}
    phases.append(rec)
    log(f'{name}: {p:.1f} W ({how})', rec)
    return rec


results = {'gpu': gpu_info, 'started': datetime.datetime.now(datetime.timezone.utc).isoformat(), 'phases': phases, 'rows': []}


def dump():
    with open(os.path.join(OUT, 'results.json'), 'w') as f:
        json.dump(results, f, indent=1)


# ---------------------------------------------------------------- 1. idle, no CUDA context
idle = idle_phase('idle-no-context', IDLE_S)
results['idleW'] = idle['powerW']
dump()

# ---------------------------------------------------------------- 2. allocate the model
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

results['torch'] = torch.__version__
results['cuda'] = torch.version.cuda
dev = 'cuda'
bf16 = torch.bfloat16
torch.manual_seed(0)
BMAX = max(BATCHES)
log('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))


def rnd(*shape, std):
    t = torch.empty(*shape, dtype=bf16, device=dev)
    t.normal_(0.0, std)
    return t


QKV = D + 2 * HKV * HD
layers = []
for i in range(LAYERS):
    layers.append({
        'wqkv': rnd(QKV, D, std=D ** -0.5),
        'wo': rnd(D, D, std=D ** -0.5),
        'wgu': rnd(2 * FF, D, std=D ** -0.5),
        'wd': rnd(D, FF, std=FF ** -0.5),
        'n1': 1.0 + 0.1 * rnd(D, std=1.0),
        'n2': 1.0 + 0.1 * rnd(D, std=1.0),
        'k': rnd(BMAX, HKV, CTX, HD, std=1.0),
        'v': rnd(BMAX, HKV, CTX, HD, std=1.0),
    })
torch.cuda.synchronize()
weight_bytes = sum(l[k].numel() * 2 for l in layers for k in ('wqkv', 'wo', 'wgu', 'wd'))
kv_bytes_per_seq = LAYERS * 2 * HKV * CTX * HD * 2
params = weight_bytes // 2
shape = {
    'layers': LAYERS, 'd': D, 'ffn': FF, 'qHeads': HQ, 'kvHeads': HKV, 'headDim': HD, 'ctxTokens': CTX,
    'weightGB': weight_bytes / 1e9, 'kvGBPerSeq': kv_bytes_per_seq / 1e9, 'dtype': 'bfloat16',
}
results['shape'] = shape
log('allocated', shape, f'{torch.cuda.memory_allocated() / 1e9:.1f} GB')
SCALE = HD ** -0.5


def rms(x, w):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)).to(bf16) * w


def step(x, b):
    h = x
    for l in layers:
        a = rms(h, l['n1'])
        qkv = F.linear(a, l['wqkv'])
        q = qkv[:, :D].reshape(b, HKV, HQ // HKV, HD)
        kn = qkv[:, D:D + HKV * HD].reshape(b, HKV, HD)
        vn = qkv[:, D + HKV * HD:].reshape(b, HKV, HD)
        kc = l['k'][:b]
        vc = l['v'][:b]
        kc[:, :, CTX - 1, :].copy_(kn)
        vc[:, :, CTX - 1, :].copy_(vn)
        s = torch.matmul(q, kc.transpose(-1, -2)) * SCALE          # [b, 8, 8, CTX]
        p = torch.softmax(s.float(), dim=-1).to(bf16)
        o = torch.matmul(p, vc).reshape(b, D)                       # [b, 8, 8, 128] -> [b, D]
        h = h + F.linear(o, l['wo'])
        a = rms(h, l['n2'])
        gu = F.linear(a, l['wgu'])
        g, u = gu.split(FF, dim=-1)
        h = h + F.linear(F.silu(g) * u, l['wd'])
    return h


idle_phase('idle-loaded', LOADED_IDLE_S)  # context up, 33 GB resident, no kernels
dump()


def run_batch(b, warm_s, meas_s, tag=''):
    x = rnd(b, D, std=1.0)
    with torch.no_grad():
        # eager warm-up on a side stream, then capture one full step as a CUDA graph
        s0 = torch.cuda.Stream()
        s0.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s0):
            for _ in range(3):
                y = step(x, b)
        torch.cuda.current_stream().wait_stream(s0)
        torch.cuda.synchronize()
        ok = bool(torch.isfinite(y).all().item())
        graph = None
        try:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                y = step(x, b)
            torch.cuda.synchronize()
            replay = graph.replay
            mode = 'cuda-graph'
        except Exception as e:  # noqa: BLE001
            log('graph capture failed, eager:', e)
            graph = None
            torch.cuda.synchronize()
            replay = lambda: step(x, b)  # noqa: E731
            mode = 'eager'

        # size a chunk to ~0.2 s
        st, en = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        st.record()
        for _ in range(10):
            replay()
        en.record()
        en.synchronize()
        est_ms = st.elapsed_time(en) / 10
        n = max(1, int(200 / est_ms))

        def loop(secs):
            chunks = []
            prev = None
            t0 = time.monotonic()
            while True:
                a, z = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                for _ in range(n):
                    replay()
                z.record()
                chunks.append((a, z))
                if prev is not None:
                    prev.synchronize()
                prev = z
                if time.monotonic() - t0 >= secs:
                    break
            torch.cuda.synchronize()
            return chunks

        loop(warm_s)
        torch.cuda.synchronize()
        t0, e0 = time.monotonic(), energy_mj()
        chunks = loop(meas_s)
        t1, e1 = time.monotonic(), energy_mj()
        per = sorted(a.elapsed_time(z) / n for a, z in chunks)
        steps = n * len(chunks)
        gpu_ms = sum(a.elapsed_time(z) for a, z in chunks)
        step_ms = per[len(per) // 2]
        p, how = power_of(t0, t1, e0, e1)
        energy_j = p * (t1 - t0)
        tokens = steps * b
        flops = 2 * params * b + LAYERS * 2 * 2 * b * HQ * CTX * HD
        bytes_ = weight_bytes + b * kv_bytes_per_seq
        row = {
            'batch': b, 'tag': tag, 'mode': mode, 'finite': ok, 'steps': steps, 'seconds': t1 - t0,
            'gpuBusyFrac': gpu_ms / 1000 / (t1 - t0),
            'stepMs': step_ms, 'stepMsMin': per[0], 'stepMsMax': per[-1],
            'tokensPerS': b / step_ms * 1000,
            'powerW': p, 'powerMethod': how,
            'energyJ': energy_j, 'energyJPerToken': energy_j / tokens,
            'achievedTBps': bytes_ / (step_ms / 1000) / 1e12,
            'achievedTFLOPs': flops / (step_ms / 1000) / 1e12,
            **window_stats(t0, t1),
        }
        del graph, chunks
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        return row


for b in BATCHES:
    row = run_batch(b, WARM_S, MEAS_S)
    results['rows'].append(row)
    dump()
    log(f"b={b:4d} step {row['stepMs']:.3f} ms  {row['tokensPerS']:9.0f} tok/s  {row['powerW']:6.1f} W  "
        f"{row['energyJPerToken']:.4f} J/tok  {row['achievedTBps']:.2f} TB/s  {row['achievedTFLOPs']:.0f} TFLOP/s  "
        f"sm {row['smMHz']} MHz  {row['tempC']} C  reasons {row['clockEventReasonsOr']}  busy {row['gpuBusyFrac']:.3f}")

# repeat batch 1, now hot, to see how much temperature moved the small-batch end
rep = run_batch(BATCHES[0], 2.0, 10.0, tag='repeat-hot')
results['rows'].append(rep)
log(f"repeat b={rep['batch']} hot: {rep['powerW']:.1f} W  step {rep['stepMs']:.3f} ms  {rep['tempC']} C")
idle_phase('idle-loaded-hot', 10.0)
dump()

# ---------------------------------------------------------------- wrap up
sampler.halt.set()
smi_proc.terminate()
snap('after', 'nvidia-smi -q -d POWER,CLOCK,PERFORMANCE,TEMPERATURE')
smi_txt.close()
with open(os.path.join(OUT, 'nvml-samples.csv'), 'w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=['t', 'powerMW', 'instantMW', 'energyMJ', 'smMHz', 'memMHz', 'tempC', 'reasons'])
    w.writeheader()
    for r in sampler.rows:
        w.writerow({**r, 't': f"{r['t'] - T_START:.3f}"})
idle_w = results['idleW']
top = [r for r in results['rows'] if r['batch'] == BMAX and not r['tag']]
top_w = top[0]['powerW'] if top else None
with open(os.path.join(OUT, 'results.csv'), 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(['batch', 'tag', 'stepMs', 'tokensPerS', 'powerW', 'energyJPerToken', 'share', 'sampledInstantW', 'smMHz', 'tempC'])
    for r in results['rows']:
        share = min(1, max(0, (r['powerW'] - idle_w) / (top_w - idle_w))) if top_w else None
        r['share'] = share
        w.writerow([r['batch'], r['tag'], f"{r['stepMs']:.4f}", f"{r['tokensPerS']:.1f}", f"{r['powerW']:.2f}",
                    f"{r['energyJPerToken']:.5f}", f'{share:.4f}' if share is not None else '',
                    r['sampledInstantW'], r['smMHz'], r['tempC']])
results['finished'] = datetime.datetime.now(datetime.timezone.utc).isoformat()
dump()

print('\nbatch  stepMs   tok/s     powerW  J/token   share   (idle {:.1f} W)'.format(idle_w))
for r in results['rows']:
    print(f"{r['batch']:5d} {r['stepMs']:7.3f} {r['tokensPerS']:9.0f} {r['powerW']:8.1f} {r['energyJPerToken']:8.4f}  {(r['share'] if r['share'] is not None else float('nan')):.3f} {r['tag']}")
for ph in phases:
    print(f"{ph['phase']}: {ph['powerW']:.1f} W ({ph['method']}), instant {ph['sampledInstantW']}, temp {ph['tempC']}")
print('total', round(time.monotonic() - T_START, 1), 's')
