"""Hugging Face-native non-transformer families: GatedCNN, LSTM and ELMo.

Importing this package registers them with the Auto classes; every saved model also
carries its code (trust_remote_code works where this project is not installed).
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForPreTraining

from .elmo import ElmoConfig, ElmoForPreTraining, ElmoModel
from .gated_cnn import GatedCnnConfig, GatedCnnForCausalLM, GatedCnnModel
from .lstm import LstmForCausalLM, LstmLmConfig, LstmModel

FAMILY_CLASSES = {
    # family: (config, base model, head model, head Auto class)
    "gatedcnn": (GatedCnnConfig, GatedCnnModel, GatedCnnForCausalLM, AutoModelForCausalLM),
    "lstm": (LstmLmConfig, LstmModel, LstmForCausalLM, AutoModelForCausalLM),
    "elmo": (ElmoConfig, ElmoModel, ElmoForPreTraining, AutoModelForPreTraining),
}

for _config, _base, _head, _auto in FAMILY_CLASSES.values():
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModel.register(_config, _base, exist_ok=True)
    _auto.register(_config, _head, exist_ok=True)
    # saved with their code: AutoConfig / AutoModel / the head's Auto class in config.auto_map
    _config.register_for_auto_class()
    _base.register_for_auto_class("AutoModel")
    _head.register_for_auto_class(_auto.__name__)


def add_base_model_to_auto_map(config, family):
    """save_pretrained records the head's class; add the base model so AutoModel works remotely too."""
    base = FAMILY_CLASSES[family][1]
    config.auto_map = dict(getattr(config, "auto_map", None) or {}, AutoModel=f"{base.__module__.split('.')[-1]}.{base.__name__}")
