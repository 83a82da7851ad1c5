from setuptools import find_packages, setup

# conf/prompts ships inside the package as vlclip_core/prompts, so an installed vlclip finds its
# default prompt templates without the repository (llm/prompts.py resolve_prompt_dir).
setup(
    packages=find_packages(include=["vlclip_core", "vlclip_core.*", "jobs"]) + ["vlclip_core.prompts"],
    package_dir={"vlclip_core.prompts": "conf/prompts"},
    package_data={"vlclip_core.prompts": ["*/*.txt"]},
)
