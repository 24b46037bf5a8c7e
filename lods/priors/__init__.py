"""Score-distillation priors: each is target minus control (see base.py)."""

from lods.priors.base import Prior, PriorOutput, normalized_guided, sds_loss
from lods.priors.dds import DDS
from lods.priors.lods_embedding import LODSEmbedding
from lods.priors.lods_lora import LODSLoRA
from lods.priors.sdi import SDI
from lods.priors.sds import SDS
from lods.priors.sds_ref import SDSRef
from lods.priors.vsd import VSD

__all__ = [
    "DDS",
    "LODSEmbedding",
    "LODSLoRA",
    "Prior",
    "PriorOutput",
    "SDI",
    "SDS",
    "SDSRef",
    "VSD",
    "normalized_guided",
    "sds_loss",
]
