"""The launch scripts: dry-run output, argument errors, and real local runs.

Nothing here needs gcloud, xpk or SLURM: the cloud scripts are checked through
their --dry_run output (and by running the remote command they would send in
a local shell), slurm.sbatch with stand-in srun/scontrol programs.
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, "launch")
SCRIPTS = ("local.sh", "tpu_pod.sh", "xpk.sh", "slurm.sbatch")
TRAIN = ["python", "-m", "vidgen.train", "--config=configs/shapes/vae.py",
         "--config.data.buckets=1x64x64:8, 16x64x64:8", "--workdir=out/it's here"]


def _run(script, *args, env=None, cwd=None, timeout=30):
  full_env = dict(os.environ, **(env or {}))
  return subprocess.run(["bash", os.path.join(LAUNCH, script), *args], env=full_env,
                        cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _lines(result):
  assert result.returncode == 0, result.stderr
  return [shlex.split(line) for line in result.stdout.splitlines()]


def _split_env(argv):
  """Leading VAR=value words -> (dict, rest)."""
  env = {}
  while argv and "=" in argv[0] and not argv[0].startswith("-"):
    key, value = argv[0].split("=", 1)
    env[key] = value
    argv = argv[1:]
  return env, argv


def _option(argv, name):
  values = [a.split("=", 1)[1] for a in argv if a.startswith(name + "=")]
  assert len(values) == 1, (name, argv)
  return values[0]


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_exits_zero(script):
  result = _run(script, "--help")
  assert result.returncode == 0, result.stderr
  assert "Usage" in result.stdout and "--dry_run" in result.stdout


# ---------------------------------------------------------------------------
# local.sh


def test_local_dry_run_prints_one_command_per_process():
  result = _run("local.sh", "3", "--port", "12345", "--devices_per_process", "4", "--dry_run",
                *TRAIN, env={"XLA_FLAGS": "--xla_cpu_enable_fast_math=false"})
  lines = _lines(result)
  assert len(lines) == 3
  for i, line in enumerate(lines):
    env, argv = _split_env(line)
    assert env == {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_cpu_enable_fast_math=false "
                   "--xla_force_host_platform_device_count=4"}
    assert argv == TRAIN + ["--coordinator_address=localhost:12345", "--num_processes=3",
                            f"--process_id={i}"]


def test_local_dry_run_default_port_and_no_device_flag():
  lines = _lines(_run("local.sh", "--dry_run", "2", "--", *TRAIN, env={"XLA_FLAGS": ""}))
  assert len(lines) == 2
  ports = {_option(line, "--coordinator_address") for line in lines}
  assert len(ports) == 1
  host, port = ports.pop().split(":")
  assert host == "localhost" and 0 < int(port) < 65536
  for line in lines:
    env, _ = _split_env(line)
    assert env == {"JAX_PLATFORMS": "cpu"}


@pytest.mark.parametrize("args, needle", [
    ([], "missing N"),
    (["python", "x.py"], "N must be a positive integer"),
    (["abc", "python", "x.py"], "N must be a positive integer"),
    (["0", "python", "x.py"], "N must be a positive integer"),
    (["2"], "missing CMD"),
    (["2", "--port", "http", "python"], "--port"),
    (["2", "--devices_per_process", "-1", "python"], "--devices_per_process"),
    (["2", "--bogus", "python"], "unknown option"),
    (["2", "python", "x.py", "--process_id=1"], "--process_id"),
])
def test_local_bad_arguments(args, needle):
  result = _run("local.sh", "--dry_run", *args)
  assert result.returncode != 0
  assert needle in result.stderr
  assert result.stdout == ""


HELPER = textwrap.dedent("""\
    import json, os, signal, sys, time
    args = sys.argv[1:]
    index = int(next((a.split("=")[1] for a in args if a.startswith("--process_id=")), 0))
    mode = os.environ.get("HELPER_MODE", "ok")
    def on_term(*_):
      print(f"got TERM {index}", flush=True)
      sys.exit(0)
    signal.signal(signal.SIGTERM, on_term)
    print(json.dumps({"argv": args, "xla": os.environ.get("XLA_FLAGS"),
                      "platforms": os.environ.get("JAX_PLATFORMS"), "cwd": os.getcwd()}),
          flush=True)
    ready_file = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"ready{index}")
    if mode == "fail" and index == 1:
      deadline = time.time() + 20  # fail only once process 0 handles SIGTERM
      while not os.path.exists(ready_file[:-1] + "0") and time.time() < deadline:
        time.sleep(0.02)
      sys.exit(3)
    if mode in ("fail", "wait"):
      open(ready_file, "w").close()
      print("ready", flush=True)
      time.sleep(60)
    sys.exit(int(os.environ.get("HELPER_EXIT", "0")))
    """)


@pytest.fixture
def helper(tmp_path):
  path = tmp_path / "helper.py"
  path.write_text(HELPER)
  return str(path)


def _records(stdout, prefix=""):
  """The JSON lines the helper printed (after `prefix`)."""
  return [json.loads(line[len(prefix):]) for line in stdout.splitlines()
          if line.startswith(prefix + "{")]


def test_local_runs_two_processes_with_prefixed_output(helper):
  result = _run("local.sh", "2", "--devices_per_process", "2", sys.executable, helper,
                "an arg with spaces", env={"XLA_FLAGS": ""})
  assert result.returncode == 0, result.stdout + result.stderr
  for i in range(2):
    (record,) = _records(result.stdout, f"[{i}] ")
    assert record["argv"][0] == "an arg with spaces"
    assert record["argv"][2:] == ["--num_processes=2", f"--process_id={i}"]
    assert record["argv"][1].startswith("--coordinator_address=localhost:")
    assert record["xla"] == "--xla_force_host_platform_device_count=2"
    assert record["platforms"] == "cpu"


def test_local_logdir_and_exit_status(helper, tmp_path):
  logdir = tmp_path / "logs"
  result = _run("local.sh", "2", sys.executable, helper,
                env={"LOGDIR": str(logdir), "HELPER_EXIT": "4"})
  assert result.returncode == 4
  assert result.stdout == ""
  for i in range(2):
    (record,) = _records((logdir / f"process_{i}.log").read_text())
    assert record["argv"][-1] == f"--process_id={i}"


def test_local_failure_stops_the_others(helper):
  start = time.monotonic()
  result = _run("local.sh", "2", sys.executable, helper, env={"HELPER_MODE": "fail"})
  assert result.returncode == 3, result.stdout + result.stderr
  assert time.monotonic() - start < 15  # process 0 would sleep 60 s
  assert "process 1 exited with status 3" in result.stderr
  assert "[0] got TERM 0" in result.stdout


def test_local_forwards_sigterm(helper):
  proc = subprocess.Popen(["bash", os.path.join(LAUNCH, "local.sh"), "2", sys.executable, helper],
                          env=dict(os.environ, HELPER_MODE="wait"), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  try:
    ready = 0
    while ready < 2:
      line = proc.stdout.readline()
      assert line, proc.stderr.read()
      ready += line.endswith("] ready\n")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=15)
  finally:
    proc.kill()
  assert proc.returncode == 143, err
  assert "[0] got TERM 0" in out and "[1] got TERM 1" in out


# ---------------------------------------------------------------------------
# tpu_pod.sh


def _gcloud(argv, verb):
  assert argv[:5] == ["gcloud", "compute", "tpus", "tpu-vm", verb], argv
  return argv[5:]


def test_tpu_pod_dry_run_runs_cmd_on_all_workers():
  lines = _lines(_run("tpu_pod.sh", "--tpu", "my-tpu", "--zone", "us-east5-a", "--project", "p",
                      "--env", "LIBTPU_INIT_ARGS=--xla_a --xla_b", "--dry_run", *TRAIN))
  assert len(lines) == 1
  rest = _gcloud(lines[0], "ssh")
  assert rest[:4] == ["my-tpu", "--zone=us-east5-a", "--project=p", "--worker=all"]
  assert len(rest) == 5 and rest[4].startswith("--command=")
  remote = rest[4][len("--command="):]
  assert shlex.join(TRAIN) in remote
  assert "export LIBTPU_INIT_ARGS='--xla_a --xla_b'" in remote
  assert "--coordinator_address" not in remote  # JAX finds the pod by itself
  assert "JAX_COORDINATOR_ADDRESS" in remote and "worker-network-endpoints" in remote


def test_tpu_pod_setup_copies_the_checkout_then_installs():
  result = _run("tpu_pod.sh", "--tpu=t", "--zone=z", "--setup", "--workdir", "gs://b/run",
                "--dry_run", "python", "-m", "vidgen.train", "--config=configs/shapes/vae.py")
  lines = _lines(result)
  assert len(lines) == 4
  assert lines[0][:2] == ["bash", "-c"] and "git -C" in lines[0][2] and "tar" in lines[0][2]
  tarball = lines[0][2].split()[-1]
  scp = _gcloud(lines[1], "scp")
  assert scp[:2] == [tarball, "t:vidgen-src.tar.gz"] and "--worker=all" in scp
  setup = _gcloud(lines[2], "ssh")
  assert setup[:3] == ["t", "--zone=z", "--worker=all"]
  assert "tar -xzf vidgen-src.tar.gz" in setup[3] and "pip install" in setup[3]
  assert "'jax[tpu]'" in setup[3]
  run = _gcloud(lines[3], "ssh")[3]
  assert "python -m vidgen.train --config=configs/shapes/vae.py --workdir=gs://b/run" in run
  assert "warning" not in result.stderr


def test_tpu_pod_setup_from_git_and_detach():
  lines = _lines(_run("tpu_pod.sh", "--tpu", "t", "--zone", "z", "--setup", "--repo",
                      "https://example.com/vidgen.git", "--ref", "v1", "--detach", "--dry_run",
                      "python", "-m", "vidgen.train", "--workdir=gs://b/x"))
  assert len(lines) == 2
  assert "git clone --quiet https://example.com/vidgen.git vidgen" in lines[0][-1]
  assert "checkout --quiet v1" in lines[0][-1]
  assert lines[1][-1].startswith("--command=nohup bash -c ")


def test_tpu_pod_stop_and_local_workdir_warning():
  (line,) = _lines(_run("tpu_pod.sh", "--tpu", "t", "--zone", "z", "--stop", "--dry_run"))
  assert "kill -TERM" in line[-1] and ".vidgen-job.pid" in line[-1]
  result = _run("tpu_pod.sh", "--tpu", "t", "--zone", "z", "--dry_run", "python", "x.py",
                "--workdir=/tmp/run")
  assert result.returncode == 0 and "not on GCS" in result.stderr


@pytest.mark.parametrize("args, needle", [
    (["--zone", "z", "python", "x.py"], "missing --tpu"),
    (["--tpu", "t", "python", "x.py"], "missing --zone"),
    (["--tpu", "t", "--zone", "z"], "missing CMD"),
    (["--tpu", "t", "--zone", "z", "--workdir", "gs://a", "python", "--workdir=gs://b"], "once"),
    (["--tpu", "t", "--zone", "z", "--env", "nope", "python"], "--env"),
    (["--tpu", "t", "--zone"], "needs a value"),
])
def test_tpu_pod_bad_arguments(args, needle):
  result = _run("tpu_pod.sh", "--dry_run", *args)
  assert result.returncode != 0
  assert needle in result.stderr


def test_tpu_pod_remote_command_runs_in_a_shell(helper, tmp_path):
  """What --command would run on a worker, run here: quoting, pid file, status."""
  (line,) = _lines(_run("tpu_pod.sh", "--tpu", "t", "--zone", "z", "--remote_dir", "work",
                        "--dry_run", sys.executable, helper, "a b", "--workdir=gs://b/x"))
  remote = line[-1][len("--command="):]
  (tmp_path / "work").mkdir()
  result = subprocess.run(
      ["bash", "-c", remote], cwd=tmp_path, capture_output=True, text=True, timeout=30,
      env=dict(os.environ, HOME=str(tmp_path), HELPER_EXIT="5", JAX_COORDINATOR_ADDRESS="h:1"))
  assert result.returncode == 5, result.stderr
  (record,) = _records(result.stdout)
  assert record["argv"] == ["a b", "--workdir=gs://b/x"]
  assert record["cwd"] == str(tmp_path / "work")
  assert not (tmp_path / ".vidgen-job.pid").exists()


def test_tpu_pod_forwards_sigterm_to_the_workers(helper, tmp_path):
  """A stand-in gcloud runs --command here: SIGTERM to tpu_pod.sh stops the job."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  gcloud = bin_dir / "gcloud"
  gcloud.write_text(textwrap.dedent("""\
      #!/bin/bash
      for a in "$@"; do case $a in --command=*) c=${a#--command=} ;; esac; done
      cd "$HOME" && exec bash -c "$c"
      """))
  gcloud.chmod(0o755)
  (tmp_path / "work").mkdir()
  env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", HOME=str(tmp_path),
             HELPER_MODE="wait", JAX_COORDINATOR_ADDRESS="h:1")
  proc = subprocess.Popen(
      ["bash", os.path.join(LAUNCH, "tpu_pod.sh"), "--tpu", "t", "--zone", "z",
       "--remote_dir", "work", sys.executable, helper, "--workdir=gs://b/x"],
      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    while proc.stdout.readline() != "ready\n":
      assert proc.poll() is None, proc.stderr.read()
    assert (tmp_path / ".vidgen-job.pid").exists()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=15)
  finally:
    proc.kill()
  assert proc.returncode == 0, err
  assert "got TERM 0" in out
  assert not (tmp_path / ".vidgen-job.pid").exists()


# ---------------------------------------------------------------------------
# xpk.sh


def test_xpk_dry_run():
  (line,) = _lines(_run("xpk.sh", "--cluster", "c", "--workload", "vae-1", "--tpu-type",
                        "v5p-32", "--num-slices", "2", "--max-restarts", "5",
                        "--grace-seconds", "300", "--env", "A=1 2", "--xpk-flag=--priority=high",
                        "--dry_run", *TRAIN[:-1], "--workdir=gs://b/vae"))
  assert line[:3] == ["xpk", "workload", "create"]
  assert _option(line, "--cluster") == "c"
  assert _option(line, "--workload") == "vae-1"
  assert _option(line, "--tpu-type") == "v5p-32"
  assert _option(line, "--num-slices") == "2"
  assert _option(line, "--max-restarts") == "5"
  assert _option(line, "--termination-grace-period-seconds") == "300"
  assert _option(line, "--env") == "A=1 2"
  assert _option(line, "--priority") == "high"
  assert _option(line, "--base-docker-image") == "python:3.11"
  assert _option(line, "--script-dir") == ROOT
  command = _option(line, "--command")
  assert "pip install" in command
  assert command.endswith("exec " + shlex.join(TRAIN[:-1] + ["--workdir=gs://b/vae"]))


def test_xpk_docker_image_command_runs_as_xpk_would(helper, tmp_path):
  (line,) = _lines(_run("xpk.sh", "--cluster=c", "--workload=w", "--tpu_type=v5p-8",
                        "--docker-image=gcr.io/p/vidgen:1", "--dry_run", sys.executable,
                        helper, "x y", "--workdir=gs://b/x"))
  assert _option(line, "--docker-image") == "gcr.io/p/vidgen:1"
  assert not any(a.startswith(("--base-docker-image", "--script-dir")) for a in line)
  command = _option(line, "--command")
  assert "pip install" not in command and "{" not in command
  # xpk's container script: `(COMMAND) & PID=$!; ... wait $PID`.
  result = subprocess.run(["bash", "-c", f"({command}) & PID=$!; wait $PID"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=30,
                          env=dict(os.environ, MEGASCALE_COORDINATOR_ADDRESS="host0:9999"))
  assert result.returncode == 0, result.stderr
  (record,) = _records(result.stdout)
  assert record["argv"] == ["x y", "--workdir=gs://b/x"]


@pytest.mark.parametrize("args, needle", [
    (["--workload", "w", "--tpu-type", "v5p-8", "python"], "missing --cluster"),
    (["--cluster", "c", "--tpu-type", "v5p-8", "python"], "missing --workload"),
    (["--cluster", "c", "--workload", "w", "python"], "missing --tpu-type"),
    (["--cluster", "c", "--workload", "w", "--tpu-type", "v5p-8"], "missing CMD"),
    (["--cluster", "c", "--workload", "w", "--tpu-type", "v5p-8", "--num-slices", "x", "py"],
     "--num-slices"),
])
def test_xpk_bad_arguments(args, needle):
  result = _run("xpk.sh", "--dry_run", *args)
  assert result.returncode != 0
  assert needle in result.stderr


# ---------------------------------------------------------------------------
# slurm.sbatch


def test_slurm_dry_run():
  for args, env in ((TRAIN, {"DRY_RUN": "1"}), (["--dry_run", *TRAIN], {})):
    (line,) = _lines(_run("slurm.sbatch", *args, env=env))
    assert line == ["JAX_LOCAL_DEVICE_IDS=0", "srun", "--kill-on-bad-exit=1", *TRAIN]


def test_slurm_dry_run_device_ids_follow_gpus_per_task():
  env = {"SLURM_JOB_ID": "7", "SLURM_GPUS_PER_TASK": "h100:2"}
  (line,) = _lines(_run("slurm.sbatch", "--dry_run", "python", "x", env=env))
  assert line[0] == "JAX_LOCAL_DEVICE_IDS=0,1"
  (line,) = _lines(_run("slurm.sbatch", "--dry_run", "python", "x",
                        env={"JAX_LOCAL_DEVICE_IDS": ""}))
  assert line[0] == "srun"


def test_slurm_errors():
  result = _run("slurm.sbatch", env={"DRY_RUN": "1"})
  assert result.returncode != 0 and "missing CMD" in result.stderr
  result = _run("slurm.sbatch", "python", "x", env={"SLURM_JOB_ID": ""})
  assert result.returncode != 0 and "sbatch" in result.stderr


def test_slurm_time_limit_signal_checkpoints_and_requeues(helper, tmp_path):
  """USR1 (from --signal=B:USR1@120) -> SIGTERM to the tasks -> scontrol requeue."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "srun").write_text('#!/bin/bash\nwhile [[ $1 == --* ]]; do shift; done\nexec "$@"\n')
  (bin_dir / "scontrol").write_text(f'#!/bin/bash\necho "$@" >> {tmp_path}/scontrol.log\n')
  for f in bin_dir.iterdir():
    f.chmod(0o755)
  env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_JOB_ID="42",
             HELPER_MODE="wait")
  env.pop("SLURM_GPUS_PER_TASK", None)
  proc = subprocess.Popen(["bash", os.path.join(LAUNCH, "slurm.sbatch"), sys.executable, helper],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    while proc.stdout.readline() != "ready\n":
      assert proc.poll() is None, proc.stderr.read()
    proc.send_signal(signal.SIGUSR1)
    out, err = proc.communicate(timeout=15)
  finally:
    proc.kill()
  assert proc.returncode == 0, err
  assert "got TERM 0" in out
  assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "42"]
