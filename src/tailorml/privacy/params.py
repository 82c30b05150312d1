"""CKKS parameters: the polynomial modulus degree N, the coefficient-modulus chain and the
scale — chosen for at least 128-bit security, and checked against the depth a model needs.

Security follows the HomomorphicEncryption.org standard (Albrecht et al., "Homomorphic
Encryption Security Standard", 2018, Table 1: uniform ternary secret, error σ = 3.2,
classical 128-bit security): the total bit length of the coefficient modulus, special
(key-switching) prime included, may be at most

    N = 4096: 109 bits · N = 8192: 218 bits · N = 16384: 438 bits · N = 32768: 881 bits

(the same bounds SEAL enforces by default). The HE-friendly model without a hidden layer
uses N = 8192 (4096 slots) and the chain 50 + 35·3 + 50 = 205 bits ≤ 218; with a hidden
layer (depth 5) N = 16384 and 60 + 40·5 + 60 = 320 bits ≤ 438.

Depth: CKKS rescales after every multiplication, dropping one prime of the chain, so a
chain q0, q1..qL, special offers L levels; the model's `multiplicative_depth` must not
exceed L. The first prime's excess over the scale (q0 - scale bits) bounds the decrypted
values: 2^15 for the 3-level chain, 2^20 for the 5-level one — far above any logit.
"""

from __future__ import annotations

from dataclasses import dataclass

from tailorml.errors import TailormlError

# HomomorphicEncryption.org security standard, Table 1 (classical, ternary secret):
# the largest log2(q) with at least 128-bit security, per polynomial modulus degree N.
MAX_MODULUS_BITS_128 = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}


class PrivacyError(TailormlError):
    """Encrypted inference cannot proceed as asked (a model, context or ciphertext that does
    not fit); the message names what and how to fix it."""


@dataclass(frozen=True)
class CKKSParameters:
    """One CKKS parameter set. `coeff_mod_bit_sizes` lists q0, the L rescaling primes and the
    special prime last (TenSEAL's convention); `scale_bits` is log2 of the global scale."""

    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int

    def __post_init__(self) -> None:
        limit = MAX_MODULUS_BITS_128.get(self.poly_modulus_degree)
        if limit is None:
            raise PrivacyError(
                f"poly_modulus_degree {self.poly_modulus_degree} is not in the security "
                f"table; use one of {sorted(MAX_MODULUS_BITS_128)}"
            )
        if self.total_bits > limit:
            raise PrivacyError(
                f"coefficient modulus of {self.total_bits} bits exceeds {limit} bits, the "
                f"128-bit-security bound for N = {self.poly_modulus_degree} "
                "(HomomorphicEncryption.org standard); drop a prime or raise N"
            )
        if len(self.coeff_mod_bit_sizes) < 3:
            raise PrivacyError("a CKKS chain needs q0, at least one rescaling prime and a special")

    @property
    def total_bits(self) -> int:
        return sum(self.coeff_mod_bit_sizes)

    @property
    def levels(self) -> int:
        """Multiplications (rescales) a fresh ciphertext can go through."""
        return len(self.coeff_mod_bit_sizes) - 2

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2

    @property
    def security_bits(self) -> int:
        """The security level the standard's table guarantees for these parameters."""
        return 128

    @property
    def tag(self) -> str:
        """A short name safe in a path, e.g. `n8192-q50-35-35-35-50-s35`: contexts of one
        chain are kept together, so those of a chain no longer served can be found without
        loading them."""
        primes = "-".join(str(bits) for bits in self.coeff_mod_bit_sizes)
        return f"n{self.poly_modulus_degree}-q{primes}-s{self.scale_bits}"

    def describe(self) -> str:
        return (
            f"CKKS N = {self.poly_modulus_degree}, coefficient modulus "
            f"{list(self.coeff_mod_bit_sizes)} = {self.total_bits} bits "
            f"(≤ {MAX_MODULUS_BITS_128[self.poly_modulus_degree]} for 128-bit security), "
            f"scale 2^{self.scale_bits}, {self.levels} levels"
        )

    def to_dict(self) -> dict:
        return {
            "poly_modulus_degree": self.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(self.coeff_mod_bit_sizes),
            "scale_bits": self.scale_bits,
            "total_bits": self.total_bits,
            "levels": self.levels,
            "security_bits": self.security_bits,
        }


# The chains we ship, shallowest first: a model gets the first one deep enough.
THREE_LEVELS = CKKSParameters(8192, (50, 35, 35, 35, 50), 35)
# N = 8192 would fit five levels only with 28-bit primes (218 bits): measured logit errors
# up to 0.2, too coarse; N = 16384 gives 40-bit primes at 2-4x the cost and larger keys.
FIVE_LEVELS = CKKSParameters(16384, (60, 40, 40, 40, 40, 40, 60), 40)
PRESETS = (THREE_LEVELS, FIVE_LEVELS)


def check_depth(parameters: CKKSParameters, depth: int, model_name: str) -> None:
    """Refuse, naming the model, a forward pass deeper than the chain: CKKS would fail
    mid-evaluation (or, worse, decrypt noise)."""
    if depth > parameters.levels:
        raise PrivacyError(
            f"{model_name} needs multiplicative depth {depth}, but the CKKS chain "
            f"{list(parameters.coeff_mod_bit_sizes)} offers {parameters.levels} levels; use a "
            "shallower model (model.hidden = 0) or a deeper chain"
        )


def parameters_for_depth(depth: int, model_name: str = "the model") -> CKKSParameters:
    """The shallowest shipped chain that evaluates `depth` multiplications (smaller keys and
    ciphertexts, faster rotations); a deeper model is refused by name."""
    for parameters in PRESETS:
        if depth <= parameters.levels:
            return parameters
    check_depth(PRESETS[-1], depth, model_name)
    raise AssertionError("unreachable")
