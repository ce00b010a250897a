"""Study files for mics-scale: parsing, validation and the list of configurations.

A study is `key = value` lines (mics-train's config-file style; `#` starts a comment).
Every value is checked before anything runs; a problem is one line naming the key, the
value and what would be valid (StudyError)."""
import os
import re
import shlex
from dataclasses import dataclass, field


class StudyError(Exception):
    pass


# key -> (meaning, default or None when required / optional)
KEYS = {
    "name": "a label for the report (default: the file's name)",
    "model": "a preset in inputs/models/ (e.g. tiny) or a model .cfg file",
    "nodes": "node counts to run, e.g. `2 4 8`",
    "ranks-per-node": "ranks (GPUs) per node",
    "strategies": "ddp zero2 zero3 mics:P mics:P:hierarchical",
    "batch-per-rank": "weak scaling: sequences per rank per optimizer step",
    "global-batch": "strong scaling: sequences per optimizer step over all ranks",
    "micro-batch": "sequences per rank per micro-step (accumulation = batch per rank / this)",
    "steps": "optimizer steps per run",
    "skip-steps": "first steps of each run left out of the timing (default 1)",
    "repeats": "runs per configuration, interleaved with the other strategies (default 1)",
    "link": "emulated target: link rates, e.g. `200mbit 1gbit` or none (default none)",
    "compute": "real (the CPU backend) or model (--backend emulated)",
    "emulated-tflops": "compute = model: the modelled device's TFLOPS per rank",
    "emulated-mem-gbps": "compute = model: its memory bandwidth in GB/s (default 0: not modelled)",
    "train-args": "extra mics-train options, e.g. `--seq 64 --lr 1e-3`",
    "timeout": "seconds a run may take before it is stopped and recorded as failed (default 600)",
    "cluster": "a cluster file for mics-plan's predicted step time (optional; a path, or a name in inputs/clusters/)",
}

STRATEGY_FORMS = "ddp, zero2, zero3, mics:P or mics:P:hierarchical"
RATE = re.compile(r"^(none|[0-9]+(\.[0-9]+)?(kbit|mbit|gbit))$")


@dataclass(frozen=True)
class Strategy:
    name: str            # ddp | zero2 | zero3 | mics
    p: int = 0           # mics partition size (0 for the others)
    hierarchical: bool = False

    def label(self):
        if self.name != "mics":
            return self.name
        return f"mics p={self.p}" + (" hier" if self.hierarchical else "")

    def slug(self):
        return self.label().replace(" p=", "-p").replace(" ", "-")

    def partition_size(self, world):
        return {"ddp": 1, "zero2": world, "zero3": world}.get(self.name, self.p)

    def train_args(self):
        args = ["--strategy", self.name]
        if self.name == "mics":
            args += ["--partition-size", str(self.p)]
            if self.hierarchical:
                args += ["--hierarchical"]
        return args


@dataclass
class Study:
    path: str
    name: str
    model: str
    nodes: list
    ranks_per_node: int
    strategies: list
    batch_per_rank: int = 0
    global_batch: int = 0
    micro_batch: int = 1
    steps: int = 10
    skip_steps: int = 1
    repeats: int = 1
    links: list = field(default_factory=lambda: ["none"])
    compute: str = "real"
    emulated_tflops: float = 0.0
    emulated_mem_gbps: float = 0.0
    train_args: list = field(default_factory=list)
    timeout: float = 600.0
    cluster: str = ""
    text: str = ""

    def world(self, nodes):
        return nodes * self.ranks_per_node

    def batch(self, nodes):
        return self.global_batch if self.global_batch else self.batch_per_rank * self.world(nodes)

    def configurations(self):
        """(nodes, link, strategy) for every configuration, in the study's order."""
        return [(n, link, s) for n in self.nodes for link in self.links for s in self.strategies]


def read_pairs(path):
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise StudyError(f"cannot read study file '{path}': {e.strerror}")
    pairs = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if "=" not in line:
            raise StudyError(f"{path}:{number}: expected `key = value`, got '{line}'")
        key, value = (s.strip() for s in line.split("=", 1))
        if key not in KEYS:
            raise StudyError(f"{path}:{number}: unknown key '{key}'; valid keys: {', '.join(KEYS)}")
        if key in pairs:
            raise StudyError(f"{path}:{number}: key '{key}' given twice")
        pairs[key] = value
    return pairs, text


def integer(key, value, least=1):
    try:
        v = int(value)
    except ValueError:
        v = None
    if v is None or v < least:
        raise StudyError(f"{key} = {value}: must be a whole number of at least {least}")
    return v


def number(key, value, least=0.0, strict=False):
    try:
        v = float(value)
    except ValueError:
        v = None
    if v is None or v < least or (strict and v <= least):
        raise StudyError(f"{key} = {value}: must be a number {'>' if strict else '>='} {least:g}")
    return v


def words(value):
    return [w for w in re.split(r"[\s,]+", value) if w]


def parse_strategy(word):
    parts = word.split(":")
    if parts[0] in ("ddp", "zero2", "zero3") and len(parts) == 1:
        return Strategy(parts[0])
    if parts[0] == "mics" and len(parts) in (2, 3):
        if not parts[1].isdigit() or int(parts[1]) < 1:
            raise StudyError(f"strategies: '{word}': P must be a positive partition size; "
                             f"choose from {STRATEGY_FORMS}")
        if len(parts) == 3 and parts[2] not in ("hierarchical", "h"):
            raise StudyError(f"strategies: '{word}': the third part must be 'hierarchical'; "
                             f"choose from {STRATEGY_FORMS}")
        return Strategy("mics", int(parts[1]), len(parts) == 3)
    raise StudyError(f"strategies: '{word}' is not known; choose from {STRATEGY_FORMS}")


def valid_partition_sizes(world, g):
    """The partition sizes mics-train accepts: divide the world, and divide the ranks per
    node or be whole nodes."""
    return [p for p in range(1, world + 1)
            if world % p == 0 and (g % p == 0 or p % g == 0)]


def resolve_model(value, source_dir):
    candidates = [value, os.path.join(source_dir, "inputs", "models", value + ".cfg"),
                  os.path.join(source_dir, "inputs", "models", value)]
    for c in candidates:
        if os.path.isfile(c):
            return os.path.abspath(c)
    presets = sorted(f[:-4] for f in os.listdir(os.path.join(source_dir, "inputs", "models"))
                     if f.endswith(".cfg"))
    raise StudyError(f"model = {value}: no such preset or file; presets: {', '.join(presets)}")


def check_layouts(s):
    for n in s.nodes:
        w, g = s.world(n), s.ranks_per_node
        valid = valid_partition_sizes(w, g)
        for st in s.strategies:
            if st.name == "mics" and st.p not in valid:
                raise StudyError(
                    f"strategies: 'mics:{st.p}' is not a valid layout for {n} nodes of {g} ranks; "
                    f"valid partition sizes: {', '.join(map(str, valid))}")
        batch = s.batch(n)
        if batch % (w * s.micro_batch):
            key = "global-batch" if s.global_batch else "batch-per-rank"
            raise StudyError(f"{key}: {batch} sequences at {n} nodes is not a multiple of ranks x "
                             f"micro-batch ({w} x {s.micro_batch})")


def load(path, source_dir):
    pairs, text = read_pairs(path)
    for key in ("model", "nodes", "ranks-per-node", "strategies"):
        if key not in pairs:
            raise StudyError(f"{path}: key '{key}' is missing ({KEYS[key]})")
    s = Study(path=os.path.abspath(path), text=text,
              name=pairs.get("name", os.path.splitext(os.path.basename(path))[0]),
              model=resolve_model(pairs["model"], source_dir),
              nodes=[integer("nodes", v) for v in words(pairs["nodes"])],
              ranks_per_node=integer("ranks-per-node", pairs["ranks-per-node"]),
              strategies=[parse_strategy(w) for w in words(pairs["strategies"])])
    if not s.nodes or not s.strategies:
        raise StudyError(f"{path}: nodes and strategies need at least one value each")
    if len(set(s.strategies)) != len(s.strategies) or len(set(s.nodes)) != len(s.nodes):
        raise StudyError(f"{path}: a node count or strategy is listed twice")
    if ("batch-per-rank" in pairs) == ("global-batch" in pairs):
        raise StudyError(f"{path}: give exactly one of batch-per-rank (weak scaling) and "
                         f"global-batch (strong scaling)")
    if "batch-per-rank" in pairs:
        s.batch_per_rank = integer("batch-per-rank", pairs["batch-per-rank"])
    else:
        s.global_batch = integer("global-batch", pairs["global-batch"])
    s.micro_batch = integer("micro-batch", pairs.get("micro-batch", "1"))
    s.steps = integer("steps", pairs.get("steps", "10"), least=2)
    s.skip_steps = integer("skip-steps", pairs.get("skip-steps", "1"), least=0)
    if s.skip_steps >= s.steps:
        raise StudyError(f"skip-steps = {s.skip_steps}: must be less than steps = {s.steps}")
    s.repeats = integer("repeats", pairs.get("repeats", "1"))
    s.links = words(pairs.get("link", "none"))
    for link in s.links:
        if not RATE.match(link):
            raise StudyError(f"link = {link}: choose none or a rate such as 200mbit or 1gbit")
    s.compute = pairs.get("compute", "real")
    if s.compute not in ("real", "model"):
        raise StudyError(f"compute = {s.compute}: choose real or model")
    if s.compute == "model":
        if "emulated-tflops" not in pairs:
            raise StudyError("compute = model needs emulated-tflops = T (the modelled TFLOPS per rank)")
        s.emulated_tflops = number("emulated-tflops", pairs["emulated-tflops"], strict=True)
        s.emulated_mem_gbps = number("emulated-mem-gbps", pairs.get("emulated-mem-gbps", "0"))
    elif "emulated-tflops" in pairs or "emulated-mem-gbps" in pairs:
        raise StudyError("emulated-tflops and emulated-mem-gbps need compute = model")
    try:
        s.train_args = shlex.split(pairs.get("train-args", ""))
    except ValueError as e:
        raise StudyError(f"train-args: {e}")
    reserved = {"--strategy", "--partition-size", "--hierarchical", "--ranks-per-node",
                "--global-batch", "--micro-batch", "--steps", "--metrics", "--model",
                "--backend", "--emulated-tflops", "--emulated-mem-gbps"}
    for a in s.train_args:
        if a.split("=", 1)[0] in reserved:
            raise StudyError(f"train-args: {a.split('=', 1)[0]} is set by the study itself; use "
                             f"its key instead (see mics-scale --help)")
    s.timeout = number("timeout", pairs.get("timeout", "600"), strict=True)
    if "cluster" in pairs:
        # As given (from the current folder), else from the repository's root, else a
        # preset name in inputs/clusters/.
        v = pairs["cluster"]
        found = [c for c in (v, os.path.join(source_dir, v), os.path.join(source_dir, "inputs", "clusters", v + ".cfg"))
                 if os.path.isfile(c)]
        if not found:
            raise StudyError(f"cluster = {v}: no such file (nor in {source_dir} or its inputs/clusters/)")
        s.cluster = os.path.abspath(found[0])
    check_layouts(s)
    return s
