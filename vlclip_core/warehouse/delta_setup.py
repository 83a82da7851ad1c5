"""Delta Lake artifacts that fit the installed delta-spark and pyspark: coordinates, flags, cached jars."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from importlib import metadata
from typing import List, Optional, Sequence

from vlclip_core.errors import ConfigError

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
DELTA_SQL_CONF = {
    "spark.sql.extensions": DELTA_EXTENSION,
    "spark.sql.catalog.spark_catalog": DELTA_CATALOG,
}
MAVEN_CENTRAL = "https://repo1.maven.org/maven2"
DELTA_API_CLASS = "io.delta.tables.DeltaTable"  # what Delta's Python API (delta.tables) calls


class DeltaSetupError(ConfigError):
    """Delta Lake is missing from the Spark session or the Python env (the message says what to add)."""


@dataclass(frozen=True)
class DeltaBuild:
    """One Delta release for one Spark line: io.delta:delta-spark_<spark major.minor>_<scala>:<delta>."""

    delta_version: str
    spark_version: str
    scala_version: str = "2.13"

    @property
    def spark_line(self) -> str:
        return ".".join(self.spark_version.split(".")[:2])

    @property
    def artifact(self) -> str:
        return f"delta-spark_{self.spark_line}_{self.scala_version}"

    @property
    def package(self) -> str:
        """The `--packages` coordinate, e.g. io.delta:delta-spark_4.2_2.13:4.4.0."""
        return f"io.delta:{self.artifact}:{self.delta_version}"

    def jar_artifacts(self) -> List[str]:
        """The Delta jars that `--jars` needs (delta-spark and delta-storage), by Maven artifact id."""
        return [self.artifact, "delta-storage"]

    def jar_names(self) -> List[str]:
        return [f"{name}-{self.delta_version}.jar" for name in self.jar_artifacts()]

    def jar_urls(self) -> List[str]:
        return [
            f"{MAVEN_CENTRAL}/io/delta/{name}/{self.delta_version}/{name}-{self.delta_version}.jar"
            for name in self.jar_artifacts()
        ]


def installed_build(spark_version: Optional[str] = None) -> DeltaBuild:
    """The Delta build for the installed delta-spark and `spark_version` (default: the installed pyspark)."""
    return DeltaBuild(_version("delta-spark"), spark_version or _version("pyspark"))


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError as err:
        raise DeltaSetupError(
            f"the Python package {distribution} is not installed: pip install vlclip (it pins it)"
        ) from err


def sql_conf_flags() -> List[str]:
    """The two `--conf` flags that make Delta the session's SQL extension and default catalog."""
    return [arg for key, value in DELTA_SQL_CONF.items() for arg in ("--conf", f"{key}={value}")]


def package_flags(build: DeltaBuild) -> List[str]:
    """`--packages <delta> --conf ... --conf ...`: what spark-submit needs for Delta (Maven or Ivy cache)."""
    return ["--packages", build.package] + sql_conf_flags()


def ivy_roots() -> List[str]:
    """Spark's Ivy directories under $HOME (~/.ivy2.5.2 for Spark 4, ~/.ivy2 before)."""
    return sorted(glob.glob(os.path.join(os.path.expanduser("~"), ".ivy2*")), reverse=True)


def cached_jars(build: DeltaBuild, roots: Optional[Sequence[str]] = None) -> List[str]:
    """Paths of the build's Delta jars in a local Ivy cache, or [] when one of them is not there."""
    for root in ivy_roots() if roots is None else roots:
        paths = [_cached_jar(root, name, build.delta_version) for name in build.jar_artifacts()]
        if all(paths):
            return paths
    return []


def _cached_jar(root: str, artifact: str, version: str) -> Optional[str]:
    """Spark's retrieved copy (<root>/jars/io.delta_<artifact>-<v>.jar) or Ivy's own (<root>/cache/...)."""
    candidates = (
        os.path.join(root, "jars", f"io.delta_{artifact}-{version}.jar"),
        os.path.join(root, "cache", "io.delta", artifact, "jars", f"{artifact}-{version}.jar"),
    )
    return next((path for path in candidates if os.path.isfile(path)), None)


def missing_delta_message(build: DeltaBuild, session_spark: Optional[str] = None) -> str:
    """What to add to spark-submit so that the Delta classes load: --packages, or --jars without Maven."""
    jars = cached_jars(build)
    where = (
        "found in the local Ivy cache; copy them to a path every node reads"
        if jars
        else "from " + " and ".join(build.jar_urls())
    )
    lines = [
        "the Delta Lake classes are not on this Spark session's classpath "
        f"({DELTA_API_CLASS} does not load).",
        "Run the job with `vlclip submit [spark-submit options] -- [job options]`, or add to spark-submit:",
        "  " + " ".join(package_flags(build)),
        f"Without Maven access, use --jars instead of --packages, with the delta-spark and delta-storage "
        f"jars ({where}):",
        "  --jars " + ",".join(jars or build.jar_names()),
    ]
    if session_spark and session_spark.split(".")[:2] != build.spark_version.split(".")[:2]:
        lines.append(
            f"Note: this session runs Spark {session_spark} but the installed pyspark is "
            f"{build.spark_version}; the Delta release must fit the Spark that runs the job."
        )
    return "\n".join(lines)
