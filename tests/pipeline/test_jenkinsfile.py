"""jenkins/Jenkinsfile: its stages, in order, each run one make target that the Makefile defines, so the pipeline is
the chain that runs and is tested outside Jenkins. No Jenkins runs here: the file is read, not executed (make lint
checks its syntax with npm-groovy-lint)."""

import os
import pathlib
import re
import shlex
import subprocess
from dataclasses import dataclass, field

REPO = pathlib.Path(__file__).resolve().parents[2]
JENKINSFILE = REPO / "jenkins" / "Jenkinsfile"

# Each stage's make target; approve asks a person (its `when` runs `make is-production`, checked with the others).
STAGE_TARGETS = {
    "test": ["test"],
    "package": ["package"],
    "publish": ["publish"],
    "plan": ["plan"],
    "approve": [],
    "deploy": ["deploy"],
    "verify": ["verify"],
    "record": ["record"],
}


@dataclass
class Sh:
    """One `sh` call: its script and whether it was made with returnStatus: true (a non-zero exit does not throw)."""

    script: str
    return_status: bool = False

    def make_targets(self) -> list[str]:
        """The targets a `make ...` script names: its words after `make` that are neither options nor VAR=value."""
        words = shlex.split(self.script)
        if not words or words[0] != "make":
            return []
        return [w for w in words[1:] if not w.startswith("-") and "=" not in w]


@dataclass
class Stage:
    name: str
    steps: list[Sh] = field(default_factory=list)  # the sh calls of its steps block
    when: list[Sh] = field(default_factory=list)  # the sh calls of its when block


@dataclass
class Pipeline:
    stages: list[Stage]  # the stages that have steps, in order (wrapper stages such as the lock's are left out)
    post: dict[str, list[Sh]]  # condition (failure, aborted...) -> its sh calls
    sh: list[Sh]  # every sh call of the file


TOKEN = re.compile(
    r"""(?P<comment>//[^\n]*|/\*.*?\*/)
      | (?P<str>'''.*?'''|\"\"\".*?\"\"\"|'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*")
      | (?P<ident>[A-Za-z_$][\w$]*)
      | (?P<punct>[{}():,])
      | (?P<other>\S)""",
    re.VERBOSE | re.DOTALL,
)


def tokens(text: str) -> list[tuple[str, str]]:
    """(kind, value) tokens of a Jenkinsfile, comments dropped, strings unquoted. Enough Groovy for a declarative
    pipeline: no slashy strings, no quotes nested in a GString's ${...}."""
    out = []
    for m in TOKEN.finditer(text):
        kind = m.lastgroup
        if kind == "comment":
            continue
        value = m.group()
        if kind == "str":
            quote = 3 if value[:3] in ("'''", '"""') else 1
            value = value[quote:-quote]
        out.append((kind, value))
    return out


def block_end(toks: list[tuple[str, str]], start: int) -> int:
    """The index of the `}` closing the `{` at start."""
    depth = 0
    for i in range(start, len(toks)):
        if toks[i] == ("punct", "{"):
            depth += 1
        elif toks[i] == ("punct", "}"):
            depth -= 1
            if depth == 0:
                return i
    raise ValueError("unbalanced braces")


def named_blocks(toks, lo, hi, name):
    """(start, end) of each `name {...}` block between lo and hi, outermost only."""
    i = lo
    while i < hi:
        if toks[i] == ("ident", name) and toks[i + 1] == ("punct", "{"):
            end = block_end(toks, i + 1)
            yield i + 1, end
            i = end
        i += 1


def sh_calls(toks, lo, hi) -> list[Sh]:
    """The sh calls between lo and hi: `sh 'script'`, `sh('script')` and `sh(script: '...', returnStatus: true)`."""
    calls = []
    for i in range(lo, hi):
        if toks[i] != ("ident", "sh"):
            continue
        if toks[i + 1][0] == "str":
            calls.append(Sh(toks[i + 1][1]))
            continue
        if toks[i + 1] != ("punct", "("):
            continue
        depth, j, args = 0, i + 1, []
        while True:
            depth += {"(": 1, ")": -1}.get(toks[j][1], 0) if toks[j][0] == "punct" else 0
            if depth == 0:
                break
            args.append(toks[j])
            j += 1
        script = next((v for k, v in args if k == "str"), None)
        assert script is not None, f"an sh call without a literal script near token {i}"
        flat = [v for _, v in args]
        return_status = any(flat[k : k + 3] == ["returnStatus", ":", "true"] for k in range(len(flat)))
        calls.append(Sh(script, return_status))
    return calls


def parse(text: str) -> Pipeline:
    toks = tokens(text)
    stages = []
    for i in range(len(toks) - 4):
        # stage('name') {
        if toks[i] == ("ident", "stage") and toks[i + 1] == ("punct", "(") and toks[i + 2][0] == "str":
            assert toks[i + 3 : i + 5] == [("punct", ")"), ("punct", "{")], f"stage {toks[i + 2][1]}: unexpected form"
            start, end = i + 4, block_end(toks, i + 4)
            if ("ident", "stage") in toks[start:end]:
                continue  # a wrapper of nested stages, such as the lock's
            steps = list(named_blocks(toks, start, end, "steps"))
            stage = Stage(toks[i + 2][1])
            for lo, hi in steps:
                stage.steps += sh_calls(toks, lo, hi)
            for lo, hi in named_blocks(toks, start, end, "when"):
                stage.when += sh_calls(toks, lo, hi)
            stages.append(stage)
    post = {}
    for lo, hi in named_blocks(toks, 0, len(toks), "post"):
        for j in range(lo + 1, hi):
            if toks[j][0] == "ident" and toks[j + 1] == ("punct", "{") and toks[j - 1][1] in "{}":
                post[toks[j][1]] = sh_calls(toks, j + 1, block_end(toks, j + 1))
    return Pipeline(stages, post, sh_calls(toks, 0, len(toks)))


def makefile_targets() -> set[str]:
    """The targets of the repository's Makefile, from make's own database (`make -p`), so every form of rule line
    counts (`a b: deps`, target-specific variables). -q: nothing is run."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    proc = subprocess.run(
        ["make", "--no-print-directory", "-pRrq", "-f", "Makefile", ":"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    targets, not_a_target = set(), False
    for line in proc.stdout.splitlines():
        m = re.match(r"([^\s#:=%.][^\s:=]*)\s*:(?![:=])", line)
        if m and not not_a_target:
            targets.add(m.group(1))
        not_a_target = line == "# Not a target:"
    assert {"lint", "test"} <= targets, f"no targets read from make -p (exit {proc.returncode}): {proc.stderr}"
    return targets


def problems(pipeline: Pipeline, targets: set[str]) -> list[str]:
    """What makes the pipeline other than the make chain it should be, one line each; empty when it is."""
    found = []
    names = [s.name for s in pipeline.stages]
    if names != list(STAGE_TARGETS):
        found.append(f"stages {names}, expected {list(STAGE_TARGETS)}")
    for stage in pipeline.stages:
        want = STAGE_TARGETS.get(stage.name)
        if want is not None and len(stage.steps) != len(want):
            found.append(f"stage {stage.name}: {len(stage.steps)} sh calls, expected {len(want)}")
        have = [t for sh in stage.steps for t in sh.make_targets()]
        if want is not None and have != want:
            found.append(f"stage {stage.name}: runs make {have}, expected {want}")
    approve = next((s for s in pipeline.stages if s.name == "approve"), None)
    if approve is not None and [t for sh in approve.when for t in sh.make_targets()] != ["is-production"]:
        found.append("stage approve: its when does not run make is-production")
    for sh in pipeline.sh:
        found += [f"make {t}: no such target in the Makefile" for t in sh.make_targets() if t not in targets]
    for condition, result in (("failure", "failed"), ("aborted", "aborted")):
        calls = [sh for sh in pipeline.post.get(condition, []) if sh.make_targets() == ["record"]]
        if not calls:
            found.append(f"post {condition}: no make record")
        for sh in calls:
            if f"RESULT={result}" not in shlex.split(sh.script):
                found.append(f"post {condition}: make record without RESULT={result}")
            if not sh.return_status:
                found.append(f"post {condition}: make record without returnStatus: a failure to record would hide why")
    return found


def test_jenkinsfile_stages_are_make_targets():
    pipeline = parse(JENKINSFILE.read_text())
    assert [s.name for s in pipeline.stages] == list(STAGE_TARGETS)
    assert problems(pipeline, makefile_targets()) == []


def test_a_stage_naming_a_missing_target_is_found(tmp_path):
    """The test above can fail: a copy whose publish stage runs a target the Makefile lacks, and whose deploy and
    verify stages are swapped, is refused with each fault named."""
    text = JENKINSFILE.read_text()
    broken = text.replace("make publish ", "make no-such-target ", 1)
    broken = broken.replace("stage('deploy')", "stage('swap')").replace("stage('verify')", "stage('deploy')")
    broken = broken.replace("stage('swap')", "stage('verify')")
    assert broken.count("no-such-target") == 1 and broken.index("stage('verify')") < broken.index("stage('deploy')")
    copy = tmp_path / "Jenkinsfile"
    copy.write_text(broken)
    found = problems(parse(copy.read_text()), makefile_targets())
    assert "make no-such-target: no such target in the Makefile" in found
    assert "stage publish: runs make ['no-such-target'], expected ['publish']" in found
    assert "stage verify: runs make ['deploy'], expected ['verify']" in found
    assert any(p.startswith("stages ") and "'approve', 'verify', 'deploy', 'record'" in p for p in found), found


def test_a_post_that_does_not_record_failures_is_found():
    text = JENKINSFILE.read_text()
    unguarded = text.replace("sh(returnStatus: true,", "sh(", 1)
    found = problems(parse(unguarded), makefile_targets())
    assert "post failure: make record without returnStatus: a failure to record would hide why" in found
    post = text[text.index("    post {") :]
    found = problems(parse(text.replace(post, "}\n")), makefile_targets())
    assert {"post failure: no make record", "post aborted: no make record"} <= set(found)
