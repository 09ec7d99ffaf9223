#!/usr/bin/env bash
# One vidgen command as an xpk workload on a GKE TPU cluster.
# See --help and docs/launching.md.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/xpk.sh --cluster C --workload W --tpu-type T [options] CMD...

Submits CMD as an xpk workload (a JobSet on a GKE cluster with TPU slices):
  xpk workload create --cluster=C --workload=W --tpu-type=T ... --command=...
Every host of every slice runs CMD; JAX and vidgen's bootstrap find the other
hosts from the environment GKE and xpk set (TPU_WORKER_HOSTNAMES, MEGASCALE_*).

  launch/xpk.sh --cluster my-cluster --workload vae-1 --tpu-type v5p-32 \
      python -m vidgen.train --config=configs/shapes/vae.py --workdir=gs://my-bucket/vae

Options (before CMD; `--` ends them; - and _ are the same in option names):
  --cluster C                  GKE cluster made with `xpk cluster create` (required)
  --workload W                 workload name (required; lower case, digits, -)
  --tpu-type T                 e.g. v5p-32, v5litepod-16 (required)
  --num-slices N               slices (multislice over DCN; default 1)
  --docker-image I             an image with vidgen installed whose working
                               directory is the repository; used as is
  --base-docker-image B        otherwise xpk builds an image from B plus this
                               checkout (default python:3.11) and the command
                               first runs `pip install -e . jax[tpu]`
  --project P, --zone Z        passed to xpk (default: gcloud's configuration)
  --max-restarts R             JobSet restarts after a failure or preemption;
                               each restart resumes from the latest checkpoint
                               (default 3)
  --grace-seconds S            --termination-grace-period-seconds: time between
                               SIGTERM and SIGKILL (default: xpk's, 30 s); give
                               the trainer enough to write a checkpoint
  --env K=V                    container environment variable (repeatable)
  --xpk-flag F                 any other `xpk workload create` flag, e.g.
                               --xpk-flag=--priority=high (repeatable)
  --dry_run                    print the xpk command (shell-quoted) and exit
  -h, --help                   this text

The workdir must be on GCS (gs://...): pods come and go, the bucket stays.
EOF
}

SCRIPT=xpk.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"


cluster="" workload="" tpu_type="" num_slices=1 docker_image="" base_image="python:3.11"
project="" zone="" max_restarts=3 grace="" dry_run=0
envs=() extra=() cmd=()
while (($#)); do
  arg=$1
  case $arg in
    --) shift; cmd=("$@"); break ;;
    -h|--help) usage; exit 0 ;;
    --dry_run|--dry-run) dry_run=1; shift; continue ;;
    --*=*) name=${arg%%=*}; value=${arg#*=}; shift ;;
    --*)
      (($# >= 2)) || die "$arg needs a value"
      name=$arg; value=$2; shift 2 ;;
    -*) die "unknown option '$arg'" ;;
    *) cmd=("$@"); break ;;
  esac
  case ${name//-/_} in
    __cluster) cluster=$value ;;
    __workload) workload=$value ;;
    __tpu_type) tpu_type=$value ;;
    __num_slices) is_uint "$value" && ((10#$value > 0)) \
                    || die "--num-slices must be a positive integer, got '$value'"
                  num_slices=$((10#$value)) ;;
    __docker_image) docker_image=$value ;;
    __base_docker_image) base_image=$value ;;
    __project) project=$value ;;
    __zone) zone=$value ;;
    __max_restarts) is_uint "$value" || die "--max-restarts must be an integer, got '$value'"
                    max_restarts=$((10#$value)) ;;
    __grace_seconds) is_uint "$value" || die "--grace-seconds must be an integer, got '$value'"
                     grace=$((10#$value)) ;;
    __env) [[ $value =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env wants K=V, got '$value'"
           envs+=("$value") ;;
    __xpk_flag) extra+=("$value") ;;
    *) die "unknown option '$name' (options go before CMD)" ;;
  esac
done

[[ -n $cluster ]] || die "missing --cluster"
[[ -n $workload ]] || die "missing --workload"
[[ -n $tpu_type ]] || die "missing --tpu-type"
((${#cmd[@]})) || die "missing CMD, e.g. python -m vidgen.train --config=... --workdir=gs://..."
workdir=""
for a in "${cmd[@]}"; do case $a in --workdir=*) workdir=${a#--workdir=} ;; esac; done
case $workdir in
  gs://*) ;;
  "") warn "CMD has no --workdir=gs://..." ;;
  *) warn "workdir '$workdir' is not on GCS: it vanishes with the pod (use gs://...)" ;;
esac

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# The container command. xpk runs it as `(COMMAND) & PID=$!` and forwards
# SIGTERM to PID; `exec` makes that PID the trainer itself.
quote_all "${cmd[@]}"; q_cmd=$REPLY
# Several single-host slices have no TPU_WORKER_HOSTNAMES list: name the
# multislice coordinator (as JAX would) so vidgen's bootstrap starts jax.distributed.
# (No braces: xpk pastes the command into a Python format template.)
coordinator='if [ -z "$JAX_COORDINATOR_ADDRESS" ] && [ -n "$MEGASCALE_COORDINATOR_ADDRESS" ]; then export JAX_COORDINATOR_ADDRESS=$(echo "$MEGASCALE_COORDINATOR_ADDRESS" | cut -d: -f1):8482; fi'
if [[ -n $docker_image ]]; then
  container_cmd="$coordinator; exec $q_cmd"
else
  container_cmd="set -e; pip install --quiet -e . 'jax[tpu]'; $coordinator; exec $q_cmd"
fi

xpk=(xpk workload create "--cluster=$cluster" "--workload=$workload" "--tpu-type=$tpu_type"
     "--num-slices=$num_slices")
[[ -z $project ]] || xpk+=("--project=$project")
[[ -z $zone ]] || xpk+=("--zone=$zone")
if [[ -n $docker_image ]]; then
  xpk+=("--docker-image=$docker_image")
else
  xpk+=("--base-docker-image=$base_image" "--script-dir=$repo_root")
fi
xpk+=("--max-restarts=$max_restarts")
[[ -z $grace ]] || xpk+=("--termination-grace-period-seconds=$grace")
for kv in ${envs[@]+"${envs[@]}"}; do xpk+=("--env=$kv"); done
xpk+=(${extra[@]+"${extra[@]}"} "--command=$container_cmd")

quote_all "${xpk[@]}"
if ((dry_run)); then
  printf '%s\n' "$REPLY"
  exit 0
fi
command -v xpk >/dev/null || die "xpk not found (pip install xpk)"
echo "+ $REPLY" >&2
exec "${xpk[@]}"
