#!/usr/bin/env bash
# One vidgen command on every worker of a Cloud TPU VM slice, through gcloud.
# See --help and docs/launching.md.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/tpu_pod.sh --tpu NAME --zone ZONE [options] [CMD...]

Runs CMD on every worker (host) of a Cloud TPU VM slice:
  gcloud compute tpus tpu-vm ssh NAME --zone=ZONE --worker=all --command=...
The command runs in the remote checkout (--remote_dir) with its .venv
activated. JAX finds the other hosts of the slice by itself; on a slice with
several hosts the script also exports JAX_COORDINATOR_ADDRESS (worker 0, port
8482, from the TPU metadata) so vidgen's bootstrap starts jax.distributed.

  launch/tpu_pod.sh --tpu my-v5p-32 --zone us-east5-a --setup \
      --workdir gs://my-bucket/vae \
      python -m vidgen.train --config=configs/shapes/vae.py

Options (before CMD; `--` ends them):
  --tpu NAME          TPU VM name (required)
  --zone ZONE         its zone (required)
  --project P         Google Cloud project (default: gcloud's configured one)
  --workdir W         appended to CMD as --workdir=W; use gs://... so every host
                      and a restarted job see the same checkpoints
  --setup             first put the code on every worker and install it:
                      copy this checkout (tracked and untracked, not ignored
                      files) with `gcloud compute tpus tpu-vm scp`, or clone
                      --repo; then create .venv (Python --python, via uv) and
                      `pip install -e . jax[tpu]`
  --repo URL          with --setup: git clone/fetch URL instead of copying
  --ref REF           with --repo: commit, branch or tag (default: HEAD)
  --remote_dir DIR    checkout on the workers, relative to home (default: vidgen)
  --python VERSION    Python for the remote .venv (default: 3.11)
  --env K=V           export K=V before CMD (repeatable), e.g. LIBTPU_INIT_ARGS=...
  --detach            start CMD under nohup (log: ~/vidgen-job.log on each
                      worker) and return; the job survives a dropped connection
  --stop              send SIGTERM to the job on every worker (it checkpoints
                      and stops); no CMD
  --dry_run           print the commands (one per line, shell-quoted) and exit
  -h, --help          this text

Without --detach the script waits for the job; SIGTERM or Ctrl-C to it sends
SIGTERM to the job on every worker (as --stop does). Re-running the same
command resumes from the latest checkpoint in the workdir.
EOF
}

SCRIPT=tpu_pod.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"


tpu="" zone="" project="" workdir="" setup=0 repo_url="" ref="HEAD" remote_dir="vidgen"
python_version="3.11" detach=0 stop=0 dry_run=0
envs=() cmd=()
while (($#)); do
  arg=$1
  case $arg in
    --) shift; cmd=("$@"); break ;;
    -h|--help) usage; exit 0 ;;
    --setup) setup=1; shift; continue ;;
    --detach) detach=1; shift; continue ;;
    --stop) stop=1; shift; continue ;;
    --dry_run|--dry-run) dry_run=1; shift; continue ;;
    --*=*) name=${arg%%=*}; value=${arg#*=}; shift ;;
    --*)
      name=$arg
      case ${name//-/_} in
        __tpu|__zone|__project|__workdir|__repo|__ref|__remote_dir|__python|__env) ;;
        *) die "unknown option '$arg' (options go before CMD)" ;;
      esac
      (($# >= 2)) || die "$arg needs a value"
      value=$2; shift 2 ;;
    -*) die "unknown option '$arg'" ;;
    *) cmd=("$@"); break ;;
  esac
  case ${name//-/_} in
    __tpu) tpu=$value ;;
    __zone) zone=$value ;;
    __project) project=$value ;;
    __workdir) workdir=$value ;;
    __repo) repo_url=$value ;;
    __ref) ref=$value ;;
    __remote_dir) remote_dir=$value ;;
    __python) python_version=$value ;;
    __env) [[ $value =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env wants K=V, got '$value'"
           envs+=("$value") ;;
    *) die "unknown option '$name' (options go before CMD)" ;;
  esac
done

[[ -n $tpu ]] || die "missing --tpu NAME"
[[ -n $zone ]] || die "missing --zone ZONE"
if ((stop)); then
  ((${#cmd[@]} == 0 && setup == 0)) || die "--stop takes no CMD and no --setup"
elif ((${#cmd[@]} == 0 && setup == 0)); then
  die "missing CMD, e.g. python -m vidgen.train --config=... --workdir=gs://..."
fi
if ((${#cmd[@]})); then
  has_workdir=""
  for a in "${cmd[@]}"; do
    case $a in --workdir=*) has_workdir=${a#--workdir=} ;; --workdir) has_workdir="?" ;; esac
  done
  if [[ -n $workdir ]]; then
    [[ -z $has_workdir ]] || die "give the workdir once: --workdir here or in CMD"
    cmd+=("--workdir=$workdir")
    has_workdir=$workdir
  fi
  case $has_workdir in
    gs://*|"?") ;;
    "") warn "CMD has no --workdir" ;;
    *) warn "workdir '$has_workdir' is not on GCS: each host writes its own copy and a" \
            "restarted job on other VMs will not find the checkpoints (use gs://...)" ;;
  esac
fi

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
gcloud_flags=("--zone=$zone")
[[ -z $project ]] || gcloud_flags+=("--project=$project")
ssh_all=(gcloud compute tpus tpu-vm ssh "$tpu" "${gcloud_flags[@]}" --worker=all)
pid_file='$HOME/.vidgen-job.pid'
quote "$remote_dir"; q_dir=$REPLY

commands=()  # each a shell-quoted command line
add() { quote_all "$@"; commands+=("$REPLY"); }

if ((stop)); then
  add "${ssh_all[@]}" "--command=if [ -f $pid_file ]; then kill -TERM \$(cat $pid_file) && echo \"\$(hostname): sent SIGTERM\"; else echo \"\$(hostname): no vidgen job\"; fi"
fi

if ((setup)); then
  if [[ -n $repo_url ]]; then
    quote "$repo_url"; q_url=$REPLY; quote "$ref"; q_ref=$REPLY
    fetch="if [ -d $q_dir/.git ]; then git -C $q_dir fetch --quiet origin $q_ref && git -C $q_dir checkout --quiet --force FETCH_HEAD; else git clone --quiet $q_url $q_dir && git -C $q_dir checkout --quiet $q_ref; fi"
  else
    tarball="${TMPDIR:-/tmp}/vidgen-src-$tpu.tar.gz"
    quote "$repo_root"; q_root=$REPLY; quote "$tarball"; q_tar=$REPLY
    add bash -c "git -C $q_root ls-files -z -co --exclude-standard | tar -C $q_root --null -T - -czf $q_tar"
    add gcloud compute tpus tpu-vm scp "$tarball" "$tpu:vidgen-src.tar.gz" "${gcloud_flags[@]}" --worker=all
    fetch="mkdir -p $q_dir && tar -xzf vidgen-src.tar.gz -C $q_dir && rm -f vidgen-src.tar.gz"
  fi
  quote "$python_version"; q_py=$REPLY
  install="export PATH=\"\$HOME/.local/bin:\$PATH\"; command -v uv >/dev/null || curl -LsSf https://astral.sh/uv/install.sh | sh; cd $q_dir; [ -x .venv/bin/python ] || uv venv --python $q_py .venv; uv pip install --python .venv/bin/python -e . 'jax[tpu]'"
  add "${ssh_all[@]}" "--command=set -e; $fetch; $install"
fi

if ((${#cmd[@]})); then
  # Several hosts: name worker 0 as the coordinator (what JAX itself would pick),
  # so vidgen's bootstrap sees JAX_COORDINATOR_ADDRESS and starts jax.distributed.
  coordinator='if [ -z "${JAX_COORDINATOR_ADDRESS:-}" ]; then eps=$(curl -sf -H Metadata-Flavor:Google http://metadata.google.internal/computeMetadata/v1/instance/attributes/worker-network-endpoints || true); case $eps in *,*) w0=${eps%%,*}; export JAX_COORDINATOR_ADDRESS=${w0##*:}:8482 ;; esac; fi'
  exports=""
  for kv in ${envs[@]+"${envs[@]}"}; do quote "${kv#*=}"; exports+="export ${kv%%=*}=$REPLY; "; done
  quote_all "${cmd[@]}"; q_cmd=$REPLY
  # The job runs in the background of a shell that turns SIGTERM/SIGHUP into
  # SIGTERM for it and leaves its pid in ~/.vidgen-job.pid for --stop.
  run="cd $q_dir; if [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi; $coordinator; ${exports}$q_cmd & pid=\$!; echo \$pid > $pid_file; trap \"kill -TERM \$pid 2>/dev/null\" TERM HUP INT; wait \$pid; while kill -0 \$pid 2>/dev/null; do wait \$pid; done; wait \$pid; rc=\$?; rm -f $pid_file; exit \$rc"
  if ((detach)); then
    quote "$run"
    add "${ssh_all[@]}" "--command=nohup bash -c $REPLY > vidgen-job.log 2>&1 < /dev/null & echo \"\$(hostname): started, log ~/vidgen-job.log\""
  else
    add "${ssh_all[@]}" "--command=$run"
  fi
fi

if ((dry_run)); then
  printf '%s\n' "${commands[@]}"
  exit 0
fi

command -v gcloud >/dev/null || die "gcloud not found (install the Google Cloud CLI)"
quote_all "${ssh_all[@]}"
stop_cmd="$REPLY --command=$(quote "if [ -f $pid_file ]; then kill -TERM \$(cat $pid_file); fi"; printf '%s' "$REPLY")"
last=$((${#commands[@]} - 1))
for i in "${!commands[@]}"; do
  echo "+ ${commands[i]}" >&2
  if ((i < last || detach || stop || ${#cmd[@]} == 0)); then
    bash -c "${commands[i]}"
    continue
  fi
  # The job itself: wait for it, forwarding SIGTERM/SIGINT to every worker.
  bash -c "${commands[i]}" &
  job=$!
  forwarded=0 signals=0
  forward() {
    signals=$((signals + 1))
    if ((forwarded)); then return; fi
    forwarded=1
    echo "tpu_pod.sh: got $1: sending SIGTERM to the job on every worker" >&2
    bash -c "$stop_cmd" || true
  }
  trap 'forward TERM' TERM
  trap 'forward INT' INT
  while true; do  # a trap ends `wait` early: wait again (bash keeps the exit status)
    seen=$signals rc=0
    wait "$job" || rc=$?
    ((signals != seen)) || break
  done
  exit "$rc"
done
