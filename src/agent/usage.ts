/** `freesh agent --help`: here, apart from the agent, so the CLI lists it without loading the agent. */
export const AGENT_USAGE = `Usage: freesh agent --node ID --gpus 0,1 [--driver nvidia-smi|zeusd|fake] [--dry-run]
                    [--redis URL] [--key-prefix P] [--backend ID=0,1 ...] [--metrics-port N]
                    [--zeusd URL|--zeusd-socket PATH] [--fake-profile 2xH100] [--period-ms 1000]
                    [--store-timeout-ms 30000]
  Scale the SM clocks of this node's GPUs with the MIAD controller: every period, read the router's
  SLO signal and the plan's clock floor from the state store, lock each GPU's clock, and publish its
  power, clock and energy for the router's cost model. Clocks are reset at start, on exit and after
  --store-timeout-ms without the store.
  --node ID            this node's name (its telemetry records are agent:ID:gpuN)
  --gpus 0,1           the GPU indices to control
  --backend ID=0,1     the router backend served by those GPUs (repeatable); default: every GPU
                       serves the backend named by --node
  --driver             nvidia-smi (default; needs root), zeusd (Zeus's daemon holds the privilege),
                       fake (in-process GPUs whose load follows the router's in-flight requests,
                       drawing the power of --fake-profile, an instance mode, split per GPU)
  --dry-run            log the locks it would set; set none
  --redis URL          the routers' state store (the fleet's --key-prefix, default freesh); without
                       it, an in-process store: only useful with --driver fake
  --metrics-port N     serve Prometheus /metrics here (default 9401; 0: any free port)`;
