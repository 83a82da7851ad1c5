"""`vlclip submit`: spark-submit of a job with the Delta package and confs that fit the installed versions."""

from __future__ import annotations

import glob
import logging
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from vlclip_core.warehouse.delta_setup import DELTA_SQL_CONF, DeltaBuild, installed_build

log = logging.getLogger(__name__)

JOBS = {"embed": "embed_catalog", "train": "train_clip", "evaluate": "evaluate", "export": "export_index"}
USAGE = f"""usage: vlclip submit [--job {{{','.join(JOBS)}}}] [--print] [spark-submit options] -- [job opts]

Runs spark-submit of jobs/<job>.py (from the installed vlclip) with the Delta package (--packages) and
its two --conf flags added, everything else passed through; exits with spark-submit's exit code.
  --job     embed (default), train, evaluate or export
  --print   print the spark-submit command instead of running it
spark-submit: $SPARK_HOME/bin/spark-submit when SPARK_HOME is set, else the installed pyspark's.
"""
SPARK_CORE_JAR = re.compile(r"spark-core_(?P<scala>\d+\.\d+)-(?P<version>\d+\.\d+\.\d+[^/]*)\.jar$")


class SubmitUsageError(ValueError):
    """`vlclip submit` was given an unknown job or a malformed option (the message names it)."""


@dataclass
class SubmitArgs:
    """`vlclip submit`'s own options, the spark-submit options to pass through, and the job's options."""

    job: str = "embed"
    print_only: bool = False
    spark_options: List[str] = field(default_factory=list)
    job_options: List[str] = field(default_factory=list)


def parse_submit_args(argv: Sequence[str]) -> SubmitArgs:
    """Split at the first `--`; before it, take out --job/--print and keep the rest for spark-submit."""
    argv = list(argv)
    if "--" not in argv:
        raise SubmitUsageError("the job's options (--config ...) go after `--`")
    cut = argv.index("--")
    parsed = SubmitArgs(job_options=argv[cut + 1:])
    tokens = iter(argv[:cut])
    for token in tokens:
        if token == "--print":
            parsed.print_only = True
        elif token == "--job" or token.startswith("--job="):
            parsed.job = token.split("=", 1)[1] if "=" in token else next(tokens, "")
        else:
            parsed.spark_options.append(token)
    if parsed.job not in JOBS:
        raise SubmitUsageError(f"--job must be one of {', '.join(JOBS)}; got {parsed.job!r}")
    return parsed


def job_file(job: str) -> str:
    """jobs/<job>.py of the installed vlclip (the `jobs` package ships with it)."""
    import jobs

    return os.path.join(os.path.dirname(os.path.abspath(jobs.__file__)), f"{JOBS[job]}.py")


def spark_home(env: Dict[str, str]) -> str:
    """$SPARK_HOME when set, else the installed pyspark's directory (which carries bin/ and jars/)."""
    if env.get("SPARK_HOME"):
        return env["SPARK_HOME"]
    import pyspark

    return os.path.dirname(os.path.abspath(pyspark.__file__))


def spark_build(home: str) -> DeltaBuild:
    """The Delta build for the Spark in `home` (its spark-core jar names the Spark and Scala versions)."""
    for path in glob.glob(os.path.join(home, "jars", "spark-core_*.jar")):
        found = SPARK_CORE_JAR.search(path)
        if found:
            build = installed_build(found["version"])
            return DeltaBuild(build.delta_version, build.spark_version, found["scala"])
    return installed_build()


def delta_options(spark_options: List[str], build: DeltaBuild) -> List[str]:
    """`spark_options` with the Delta package (merged into a given --packages) and the two SQL confs."""
    options = list(spark_options)
    if not _brings_delta(options):
        options = _with_package(options, build.package)
    given = {value.split("=", 1)[0] for value in _option_values(options, "--conf")}
    for key, value in DELTA_SQL_CONF.items():
        if key not in given:
            options += ["--conf", f"{key}={value}"]
    return options


def _brings_delta(options: List[str]) -> bool:
    """True when the user already put a Delta package or jar on the command."""
    jars = ",".join(_option_values(options, "--jars"))
    packages = ",".join(_option_values(options, "--packages"))
    confs = ",".join(v for v in _option_values(options, "--conf") if v.startswith("spark.jars"))
    return "delta-spark" in jars + confs or "io.delta:" in packages + confs


def _with_package(options: List[str], package: str) -> List[str]:
    for i, token in enumerate(options):
        if token == "--packages" and i + 1 < len(options):
            return options[: i + 1] + [f"{options[i + 1]},{package}"] + options[i + 2:]
        if token.startswith("--packages="):
            return options[:i] + [f"{token},{package}"] + options[i + 1:]
    return ["--packages", package] + options


def _option_values(options: List[str], name: str) -> List[str]:
    """Every value of `name` in spark-submit options, written `--name value` or `--name=value`."""
    values = []
    for i, token in enumerate(options):
        if token == name and i + 1 < len(options):
            values.append(options[i + 1])
        elif token.startswith(name + "="):
            values.append(token[len(name) + 1:])
    return values


def submit_command(args: SubmitArgs, env: Dict[str, str]) -> Tuple[List[str], Dict[str, str]]:
    """The spark-submit command line and its environment for `args`."""
    home = spark_home(env)
    command = [os.path.join(home, "bin", "spark-submit")]
    command += delta_options(args.spark_options, spark_build(home))
    command += [job_file(args.job)] + args.job_options
    return command, submit_env(env, home)


def submit_env(env: Dict[str, str], home: str) -> Dict[str, str]:
    """SPARK_HOME, and the driver's and workers' Python defaulting to this interpreter (which has vlclip)."""
    out = dict(env)
    out.setdefault("SPARK_HOME", home)
    out.setdefault("PYSPARK_PYTHON", sys.executable)
    out.setdefault("PYSPARK_DRIVER_PYTHON", out["PYSPARK_PYTHON"])
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run spark-submit in this process's place (exec), so its exit code and signals are the scheduler's."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if {"-h", "--help"} & set(argv[: argv.index("--") if "--" in argv else len(argv)]):
        print(USAGE)
        return 0
    try:
        args = parse_submit_args(argv)
    except SubmitUsageError as err:
        print(f"vlclip submit: {err}\n{USAGE}", file=sys.stderr)
        return 2
    command, env = submit_command(args, dict(os.environ))
    if args.print_only:
        print(shlex.join(command))
        return 0
    log.info("running %s", shlex.join(command))
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, env)
    return 127  # not reached: execve replaces this process or raises
