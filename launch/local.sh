#!/usr/bin/env bash
# N processes of one vidgen command on this machine, joined by jax.distributed.
# See --help and docs/launching.md.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/local.sh [options] N CMD...

Starts N processes of CMD on this machine, each with
  --coordinator_address=localhost:PORT --num_processes=N --process_id=I
appended and JAX_PLATFORMS=cpu in its environment, so vidgen's bootstrap joins
them with jax.distributed (a multi-host job simulated on one machine).

  launch/local.sh 2 --devices_per_process 4 \
      python -m vidgen.train --config=configs/shapes/vae.py --workdir=out/vae2

Options (before CMD; `--` ends them):
  --port P                  coordinator port (default: a free port)
  --devices_per_process D   simulated CPU devices per process: appends
                            --xla_force_host_platform_device_count=D to XLA_FLAGS
  --grace_seconds S         after a failure or a signal, how long the other
                            processes get to exit after SIGTERM before SIGKILL
                            (default 60)
  --dry_run                 print the N commands (one per line, shell-quoted)
                            and exit without running anything
  -h, --help                this text

Output of process I goes to the console prefixed with "[I] ", or to
$LOGDIR/process_I.log when LOGDIR is set. local.sh waits for all processes;
when one fails it sends SIGTERM to the others and exits with the failed
process's status. SIGTERM or SIGINT (Ctrl-C) to local.sh is forwarded to every
process as SIGTERM (the trainer checkpoints and stops); a second one kills them.
EOF
}

SCRIPT=local.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"


num="" port="" devices="" grace=60 dry_run=0
cmd=()
while (($#)); do
  arg=$1
  case $arg in
    --) shift; cmd=("$@"); break ;;
    -h|--help) usage; exit 0 ;;
    --dry_run|--dry-run) dry_run=1; shift; continue ;;
    --port=*|--devices_per_process=*|--devices-per-process=*|--grace_seconds=*|--grace-seconds=*)
      name=${arg%%=*}; value=${arg#*=}; shift ;;
    --port|--devices_per_process|--devices-per-process|--grace_seconds|--grace-seconds)
      (($# >= 2)) || die "$arg needs a value"
      name=$arg; value=$2; shift 2 ;;
    -*) die "unknown option '$arg' (options go before CMD)" ;;
    *)
      if [[ -z $num ]]; then
        is_uint "$arg" && ((10#$arg > 0)) || die "N must be a positive integer, got '$arg'"
        num=$((10#$arg)); shift; continue
      fi
      cmd=("$@"); break ;;
  esac
  case ${name//-/_} in
    __port) is_uint "$value" && ((10#$value > 0 && 10#$value < 65536)) \
              || die "--port must be a port number, got '$value'"; port=$((10#$value)) ;;
    __devices_per_process) is_uint "$value" && ((10#$value > 0)) \
              || die "--devices_per_process must be a positive integer, got '$value'"
            devices=$((10#$value)) ;;
    __grace_seconds) is_uint "$value" || die "--grace_seconds must be an integer, got '$value'"
            grace=$((10#$value)) ;;
  esac
done

[[ -n $num ]] || die "missing N, the number of processes"
((${#cmd[@]})) || die "missing CMD, e.g. python -m vidgen.train --config=... --workdir=..."
for a in "${cmd[@]}"; do
  case $a in
    --coordinator_address|--coordinator_address=*|--num_processes|--num_processes=*|--process_id|--process_id=*)
      die "CMD already has ${a%%=*}; local.sh adds the multi-process flags itself" ;;
  esac
done

if [[ -z $port ]]; then
  py=$(command -v python3 || command -v python || true)
  [[ -n $py ]] || die "no python3 to pick a free port; pass --port"
  port=$("$py" -c 'import socket
s = socket.socket(); s.bind(("localhost", 0)); print(s.getsockname()[1])')
fi

env_for_process=(JAX_PLATFORMS=cpu)
if [[ -n $devices ]]; then
  xla="${XLA_FLAGS:-}"
  env_for_process+=("XLA_FLAGS=${xla:+$xla }--xla_force_host_platform_device_count=$devices")
fi

process_argv() {  # $1: process index -> PROCESS_ARGV
  PROCESS_ARGV=("${env_for_process[@]}" "${cmd[@]}" "--coordinator_address=localhost:$port"
                "--num_processes=$num" "--process_id=$1")
}

if ((dry_run)); then
  for ((i = 0; i < num; i++)); do
    process_argv "$i"; quote_all "${PROCESS_ARGV[@]}"; printf '%s\n' "$REPLY"
  done
  exit 0
fi

# ---------------------------------------------------------------------------
# Run.
pids=() prefixers=() stopping=0 stop_deadline=0 got_signal="" status=0
tmp=$(mktemp -d "${TMPDIR:-/tmp}/vidgen-local.XXXXXX")

cleanup() {
  local p
  for p in ${pids[@]+"${pids[@]}"}; do [[ -z $p ]] || kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

stop_all() {  # $1: signal for the processes still running
  local p
  for p in ${pids[@]+"${pids[@]}"}; do [[ -z $p ]] || kill "-$1" "$p" 2>/dev/null || true; done
}

on_signal() {  # $1: signal name local.sh received
  if [[ -n $got_signal || $stopping == 1 ]]; then
    echo "local.sh: second $1: killing all processes" >&2
    stop_all KILL
  else
    echo "local.sh: got $1: sending SIGTERM to all processes (they checkpoint and stop)" >&2
    stop_all TERM
    stopping=1 stop_deadline=$((SECONDS + grace))
  fi
  got_signal=$1
}
trap 'on_signal TERM' TERM
trap 'on_signal INT' INT

[[ -z ${LOGDIR:-} ]] || mkdir -p "$LOGDIR"
echo "local.sh: $num processes, coordinator localhost:$port" >&2
for ((i = 0; i < num; i++)); do
  process_argv "$i"
  if [[ -n ${LOGDIR:-} ]]; then
    env "${PROCESS_ARGV[@]}" >"$LOGDIR/process_$i.log" 2>&1 </dev/null &
    pids+=($!)
    echo "local.sh: process $i (pid ${pids[i]}) logs to $LOGDIR/process_$i.log" >&2
  else
    # A FIFO per process: its prefixer ignores INT/TERM, so a stopping process's
    # last words (e.g. "checkpoint saved") still reach the console.
    mkfifo "$tmp/out$i"
    # (A bash loop, not awk/sed: those may buffer their input from a FIFO.)
    (trap '' INT TERM
     while IFS= read -r line || [[ -n $line ]]; do printf '[%d] %s\n' "$i" "$line"; done
    ) <"$tmp/out$i" &
    prefixers+=($!)
    env "${PROCESS_ARGV[@]}" >"$tmp/out$i" 2>&1 </dev/null &
    pids+=($!)
  fi
done

running=$num
while ((running > 0)); do
  for ((i = 0; i < num; i++)); do
    p=${pids[i]}
    [[ -n $p ]] && ! kill -0 "$p" 2>/dev/null || continue
    rc=0; wait "$p" || rc=$?
    pids[i]=""; running=$((running - 1))
    if ((rc != 0 && status == 0)); then
      status=$rc
      if ((running > 0)) && [[ -z $got_signal ]]; then
        echo "local.sh: process $i exited with status $rc; stopping the others" >&2
        stop_all TERM
        stopping=1 stop_deadline=$((SECONDS + grace))
      else
        echo "local.sh: process $i exited with status $rc" >&2
      fi
    fi
  done
  if ((running > 0)); then
    if ((stopping == 1 && SECONDS >= stop_deadline)); then
      echo "local.sh: processes still running ${grace}s after SIGTERM: killing them" >&2
      stop_all KILL
      stopping=2
    fi
    sleep 0.2
  fi
done
for p in ${prefixers[@]+"${prefixers[@]}"}; do wait "$p" 2>/dev/null || true; done

if ((status != 0)); then exit "$status"; fi
case $got_signal in
  TERM) exit 143 ;;
  INT) exit 130 ;;
esac
exit 0
