"""The stage registry is the one description of a stage: the model classes and the chain read it."""

import pytest

from axion_ray.errors import ConfigError
from axion_ray.models.registry import STAGE_OUTPUTS, STAGES, chain_reads, check_stage_chain, stage_spec


def test_model_classes_take_their_inputs_and_output_from_the_spec():
    for stage, spec in STAGES.items():
        cls = spec.model_cls()
        assert cls.INPUTS == spec.model_inputs and cls.OUTPUT == spec.output, stage
        assert tuple(getattr(cls, "OPTIONAL_INPUTS", ())) == spec.optional_inputs
    assert STAGE_OUTPUTS == ("opt_v1", "opt_v2", "opt_v3")


def test_what_a_chain_reads_from_the_store():
    assert chain_reads((1, 2, 3)) == ["s1", "opt_v1", "opt_v2"]
    assert chain_reads((2,)) == ["opt_v1"]
    assert chain_reads((3,)) == ["s1", "opt_v2"]
    assert chain_reads((2, 3)) == ["s1", "opt_v1", "opt_v2"]


def test_weight_files_and_names_come_from_the_spec():
    from axion_ray.models.presets import PRESETS, TOKENIZER_S2L2A

    tiny = PRESETS["tiny"]
    assert stage_spec(1).weight_variants(stage_spec(1).backbone(tiny)) == ["terramind_v1_tiny", TOKENIZER_S2L2A]
    assert stage_spec(3).model_name(stage_spec(3).backbone(tiny)) == "terramind_v1_tiny_generate"
    assert stage_spec(2).backbone(tiny, "prithvi_eo_v2_300") == "prithvi_eo_v2_300"
    assert stage_spec(3).inputs_for("opt_v1") == ("s1", "opt_v1") and stage_spec(1).inputs_for("opt_v1") == ("s1",)


def test_unknown_stages_and_bad_chains_are_config_errors():
    with pytest.raises(ConfigError, match="stage must be 1, 2, 3"):
        stage_spec(4)
    for chain in ((), (3, 1), (1, 1), (0,)):
        with pytest.raises(ConfigError, match="increasing subset"):
            check_stage_chain(chain)
