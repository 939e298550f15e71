"""Fast functional forwards of the model families the recipes train."""

from devinterp.models.attn_only import AttnOnlyTransformer, bridge_config, build_bridge

__all__ = ["AttnOnlyTransformer", "bridge_config", "build_bridge"]
