from typing import NamedTuple

from kfp import dsl

from reasoning_ner.images import image


@dsl.component(base_image=image("cpu"), install_kfp_package=False)
def lookup_champion(registry_uri: str) -> NamedTuple("Outputs", [("model_uri", str), ("version", str)]):
    """Find the champion a refresh run retrains, before any traffic is harvested or GPU hour spent.

    Reads the registry's champion pointer (the same registry the promotion step writes, reached with
    the S3 Secret's AWS_* environment). A registry without a champion fails here with a message
    saying to run the main pipeline first: a refresh always starts from the model being served.

    Args:
        registry_uri: Model registry root, e.g. s3://reasoning-ner/registry.

    Returns:
        The champion's registry copy (the SFT step's start model) and its version.
    """
    from collections import namedtuple

    from reasoning_ner.promotion import Registry
    from reasoning_ner.refresh import champion_model

    champion = champion_model(Registry(registry_uri))
    return namedtuple("Outputs", ["model_uri", "version"])(champion["model_uri"], champion["version"])
