"""Running a study's configurations: the schedule, the three targets, one run's record."""
import csv
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import time

from study import StudyError

GROUPS = ("world", "partition", "replication", "inter", "intra")


class Run:
    """One mics-train invocation: a configuration and a repeat (or the 0-step baseline
    that measures start-up traffic on the emulated target)."""

    def __init__(self, study, nodes, link, strategy, repeat, out_dir):
        self.study, self.nodes, self.link, self.strategy = study, nodes, link, strategy
        self.repeat = repeat  # an int, or "baseline"
        self.config_id = f"n{nodes}-{link}-{strategy.slug()}"
        tag = "baseline" if repeat == "baseline" else f"rep{repeat}"
        self.dir = os.path.join(out_dir, "runs", self.config_id, tag)

    @property
    def steps(self):
        return 0 if self.repeat == "baseline" else self.study.steps

    def describe(self):
        what = "start-up baseline" if self.repeat == "baseline" else f"repeat {self.repeat + 1}"
        return f"{self.nodes} nodes, {self.link}, {self.strategy.label()}, {what}"

    def status(self):
        try:
            with open(os.path.join(self.dir, "status.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def train_args(self, bin_dir):
        s = self.study
        args = [os.environ.get("MICS_TRAIN", os.path.join(bin_dir, "mics-train")),
                "--model", s.model, "--ranks-per-node", str(s.ranks_per_node),
                "--global-batch", str(s.batch(self.nodes)), "--micro-batch", str(s.micro_batch),
                "--steps", str(self.steps), "--metrics", os.path.join(self.dir, "metrics.csv"),
                # No validation pass after the last step: its gathers would be counted in
                # the per-step wire bytes (the 0-step baseline has none). train-args may
                # still ask for one.
                "--eval-batches", "0"]
        args += self.strategy.train_args()
        if s.compute == "model":
            args += ["--backend", "emulated", "--emulated-tflops", repr(s.emulated_tflops),
                     "--emulated-mem-gbps", repr(s.emulated_mem_gbps)]
        return args + s.train_args


def schedule(study, out_dir, with_baselines):
    """Every run, interleaved: per repeat, every node count and link, the strategies in an
    order rotated by one per repeat, so no strategy always runs first (or last) on a
    machine whose load drifts."""
    runs = []
    k = len(study.strategies)
    if with_baselines:
        for n, link, s in study.configurations():
            runs.append(Run(study, n, link, s, "baseline", out_dir))
    for rep in range(study.repeats):
        order = study.strategies[rep % k:] + study.strategies[:rep % k]
        for n in study.nodes:
            for link in study.links:
                runs += [Run(study, n, link, s, rep, out_dir) for s in order]
    return runs


# ---------------------------------------------------------------------------------------
# Targets: how one run's command line is made.

class EmulatedTarget:
    name = "emulated"
    baselines = True

    def __init__(self, source_dir, study):
        self.script = os.path.join(source_dir, "scripts", "emu-cluster.sh")
        if os.geteuid() != 0:
            raise StudyError("--target emulated must run as root (it creates network namespaces)")
        max_nodes = max(study.nodes)
        if max_nodes > 64:
            raise StudyError(f"nodes = {max_nodes}: the emulated target makes at most 64 nodes")

    def command(self, run, train):
        return [self.script, "--nodes", str(run.nodes), "--ranks-per-node",
                str(run.study.ranks_per_node), "--rate", run.link,
                "--counters", os.path.join(run.dir, "counters.csv"), "--mpirun-arg", "-q",
                "--"] + train


def ignore_links(study, target):
    """Real clusters have their own network: link rates apply to the emulated target only."""
    if study.links != ["none"]:
        print(f"mics-scale: link = {' '.join(study.links)} applies to the emulated target; "
              f"target {target} runs on the cluster's own network", flush=True)
    study.links = ["native"]


class SlurmTarget:
    """Each run is a job step (srun) inside the allocation mics-scale runs in."""
    name = "slurm"
    baselines = False

    def __init__(self, study):
        for tool in ("srun",):
            if shutil.which(tool) is None:
                raise StudyError(f"--target slurm: {tool} not found")
        if "SLURM_JOB_ID" not in os.environ:
            raise StudyError("--target slurm runs inside an allocation: salloc -N "
                             f"{max(study.nodes)} --ntasks-per-node={study.ranks_per_node} "
                             "mics-scale run ... (or sbatch jobscripts/mics-scale.sbatch)")
        have = int(os.environ.get("SLURM_JOB_NUM_NODES", os.environ.get("SLURM_NNODES", "0")))
        if have and have < max(study.nodes):
            raise StudyError(f"nodes = {max(study.nodes)}: the allocation has only {have} nodes")
        ignore_links(study, "slurm")

    def command(self, run, train):
        g = run.study.ranks_per_node
        return ["srun", "--mpi=pmix", "--cpu-bind=none", "--kill-on-bad-exit=1",
                "-N", str(run.nodes), "-n", str(run.nodes * g), f"--ntasks-per-node={g}"] + train


class HostfileTarget:
    """Plain mpirun over the first N hosts of a hostfile (one host name or address per
    line; anything after it, such as slots=8, is ignored)."""
    name = "hostfile"
    baselines = False

    def __init__(self, path, study):
        if not path:
            raise StudyError("--target hostfile needs --hostfile FILE (one host per line)")
        try:
            with open(path) as f:
                self.hosts = [l.split()[0] for l in f if l.strip() and not l.startswith("#")]
        except OSError as e:
            raise StudyError(f"--hostfile {path}: {e.strerror}")
        if len(self.hosts) < max(study.nodes):
            raise StudyError(f"--hostfile {path}: {len(self.hosts)} hosts, the study needs "
                             f"{max(study.nodes)}")
        ignore_links(study, "hostfile")

    def command(self, run, train):
        g = run.study.ranks_per_node
        sub = os.path.join(run.dir, "hostfile")
        with open(sub, "w") as f:
            f.writelines(f"{h} slots={g}\n" for h in self.hosts[:run.nodes])
        return ["mpirun", "-q", "--bind-to", "none", "--map-by", "slot", "-np",
                str(run.nodes * g), "--hostfile", sub] + train


# ---------------------------------------------------------------------------------------
# Executing and recording one run.

def last_line(path):
    try:
        with open(path, errors="replace") as f:
            lines = [l.strip() for l in f if l.strip()]
    except OSError:
        return ""
    # The first line is the command mics-scale wrote; a run that printed nothing says so.
    lines = lines[1:] if lines and lines[0].startswith("$ ") else lines
    return lines[-1] if lines else "(no output)"


def children_cpu():
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime


def execute(run, target, bin_dir):
    """Runs it, waits at most the study's timeout, and writes DIR/status.json."""
    if os.path.isdir(run.dir):
        shutil.rmtree(run.dir)
    os.makedirs(run.dir)
    cmd = target.command(run, run.train_args(bin_dir))
    log_path = os.path.join(run.dir, "log.txt")
    t0, c0 = time.time(), children_cpu()
    state = "ok"
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        # A session of its own, so a timeout can stop every process the run started.
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=run.study.timeout)
        except subprocess.TimeoutExpired:
            state = "timeout"
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                rc = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                rc = proc.wait()
        except KeyboardInterrupt:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
            raise
    wall = time.time() - t0
    rows = read_metrics(os.path.join(run.dir, "metrics.csv"))
    if state == "ok" and (rc != 0 or len(rows) != run.steps):
        state = "failed"
    status = {"state": state, "rc": rc, "wall_s": wall, "cpu_s": children_cpu() - c0,
              "command": cmd, "last_line": "" if state == "ok" else last_line(log_path),
              "load": os.getloadavg()[0]}
    with open(os.path.join(run.dir, "status.json"), "w") as f:
        json.dump(status, f, indent=1)
    return status


def read_metrics(path):
    try:
        with open(path) as f:
            return list(csv.DictReader(f))
    except OSError:
        return []


def read_counters(path):
    """{node: (tx_bytes, rx_bytes)} from emu-cluster.sh's counters file."""
    try:
        with open(path) as f:
            return {int(r["node"]): (int(r["tx_bytes"]), int(r["rx_bytes"])) for r in csv.DictReader(f)}
    except (OSError, KeyError, ValueError):
        return {}


def summarise(run):
    """The figures of one finished run, over its timed steps (after skip-steps)."""
    rows = read_metrics(os.path.join(run.dir, "metrics.csv"))
    timed = rows[run.study.skip_steps:]

    def med(key):
        vals = [float(r[key]) for r in timed if r.get(key) not in (None, "")]
        return statistics.median(vals) if vals else None

    out = {"step_ms": med("step_ms"), "tflops_per_rank": med("tflops_per_rank"),
           "exposed_comm_ms": med("exposed_comm_ms"), "mfu": med("mfu")}
    for g in GROUPS:
        out[f"{g}_bytes"] = med(f"{g}_bytes")
    out["final_loss"] = rows[-1]["loss"] if rows else None
    out["counters"] = read_counters(os.path.join(run.dir, "counters.csv"))
    return out
