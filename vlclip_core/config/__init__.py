"""Typed job configuration: sections (sections.py), YAML loading (loader.py), recipe identity (identity.py).

The names below are the package's public surface; `from vlclip_core.config import X` keeps working for
every section class, the loader and the checks.
"""

from vlclip_core.config.checks import check_prompt_template, check_run_id  # noqa: F401
from vlclip_core.config.identity import (  # noqa: F401
    RunIdentities,
    detector_identity,
    digest,
    llm_identity,
    run_identities,
)
from vlclip_core.config.loader import apply_override, build, load_config, read_profile  # noqa: F401
from vlclip_core.config.sections import (  # noqa: F401
    CatalogConfig,
    ClipConfig,
    DetectorConfig,
    FailedFractions,
    FallbackFractions,
    ImageConfig,
    IndexConfig,
    JobConfig,
    LLMConfig,
    ModelsConfig,
    RayConfig,
    SparkConfig,
    StageResources,
    StagesConfig,
    ThresholdsConfig,
    VlclipConfig,
    WarehouseConfig,
)
from vlclip_core.errors import ConfigError  # noqa: F401
