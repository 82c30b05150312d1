"""CKKS parameters: the security bound of the HomomorphicEncryption.org table, and the
depth a model needs against the levels a chain offers."""

import pytest

from tailorml.privacy.params import (
    FIVE_LEVELS,
    PRESETS,
    THREE_LEVELS,
    CKKSParameters,
    PrivacyError,
    check_depth,
    parameters_for_depth,
)


def test_shipped_chains_are_within_the_128_bit_bound():
    # Table 1 of the standard: log2(q) <= 218 for N = 8192, 438 for N = 16384 (special
    # prime included)
    bound = {8192: 218, 16384: 438}
    for parameters in PRESETS:
        assert parameters.total_bits <= bound[parameters.poly_modulus_degree]
    assert (THREE_LEVELS.poly_modulus_degree, THREE_LEVELS.total_bits) == (8192, 205)
    assert (FIVE_LEVELS.poly_modulus_degree, FIVE_LEVELS.total_bits) == (16384, 320)
    assert (THREE_LEVELS.levels, FIVE_LEVELS.levels) == (3, 5)


def test_a_modulus_above_the_bound_is_refused():
    with pytest.raises(PrivacyError, match="exceeds 218 bits, the 128-bit-security bound"):
        CKKSParameters(8192, (60, 40, 40, 40, 60), 40)
    with pytest.raises(PrivacyError, match="not in the security table"):
        CKKSParameters(3000, (30, 20, 30), 20)


def test_the_shallowest_deep_enough_chain_is_chosen():
    assert parameters_for_depth(3) is THREE_LEVELS
    assert parameters_for_depth(4) is FIVE_LEVELS
    assert parameters_for_depth(5) is FIVE_LEVELS


def test_a_model_deeper_than_the_chain_is_refused_by_name():
    with pytest.raises(PrivacyError, match=r"runs/deep/model\.pt needs multiplicative depth 6"):
        parameters_for_depth(6, "runs/deep/model.pt")
    with pytest.raises(PrivacyError, match=r"needs multiplicative depth 5.*offers 3 levels"):
        check_depth(THREE_LEVELS, 5, "m")
