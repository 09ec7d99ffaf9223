# Shared by local.sh, tpu_pod.sh and xpk.sh (sourced; set SCRIPT first).
# slurm.sbatch keeps its own copy: sbatch runs a spooled copy of the script,
# from which this file's path is not known.

die() { echo "$SCRIPT: $*" >&2; echo "Try 'launch/$SCRIPT --help'." >&2; exit 2; }
warn() { echo "$SCRIPT: warning: $*" >&2; }

# Shell-quotes one word into REPLY (the same rules as Python's shlex.quote).
quote() {
  local s=$1
  if [[ -z $s ]]; then REPLY="''"
  elif [[ $s =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then REPLY=$s
  else REPLY="'${s//\'/\'\"\'\"\'}'"
  fi
}
quote_all() {
  local out="" w
  for w in "$@"; do quote "$w"; out+="${out:+ }$REPLY"; done
  REPLY=$out
}
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
