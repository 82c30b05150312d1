"""TenSEAL contexts: the client's secret one and the public one the server may hold.

The client makes the keys (secret key, relinearisation keys for x², Galois keys for the
rotations) and sends the server a context *without* the secret key: with it the server
evaluates on ciphertexts; without the secret key it cannot decrypt them. The server
refuses a context that carries a secret key (it must never hold one) or lacks the
evaluation keys, and one whose parameters differ from the model's chain.
"""

from __future__ import annotations

import math
from itertools import pairwise

import tenseal as ts

from tailorml.privacy.params import CKKSParameters, PrivacyError

NOT_A_CONTEXT = (
    "public_context is not a serialized TenSEAL context ({error}); send "
    "EncryptedAlertClient.public_context()"
)


class OtherChainError(PrivacyError):
    """A context made for another CKKS chain (degree, primes or scale) than the model's."""


def secret_context(parameters: CKKSParameters, threads: int | None = None) -> ts.Context:
    """A fresh CKKS context with every key (client side only)."""
    context = ts.context(
        ts.SCHEME_TYPE.CKKS,
        poly_modulus_degree=parameters.poly_modulus_degree,
        coeff_mod_bit_sizes=list(parameters.coeff_mod_bit_sizes),
        n_threads=threads,
    )
    context.global_scale = 2.0**parameters.scale_bits
    context.generate_relin_keys()
    context.generate_galois_keys()
    return context


def public_bytes(context: ts.Context) -> bytes:
    """The context serialised without its secret key: parameters, public, relinearisation
    and Galois keys — what the server receives."""
    return context.serialize(
        save_public_key=True, save_secret_key=False, save_galois_keys=True, save_relin_keys=True
    )


def load_public(
    data: bytes, parameters: CKKSParameters | None = None, threads: int | None = None
) -> ts.Context:
    """The server's view of a client context: refused if it holds a secret key, lacks the
    evaluation keys, or (given `parameters`) was made for another chain."""
    if not isinstance(data, bytes | bytearray) or not data:
        raise PrivacyError("public_context is empty; send EncryptedAlertClient.public_context()")
    try:
        context = ts.context_from(bytes(data), n_threads=threads)
    except Exception as error:  # TenSEAL raises ValueError/RuntimeError/TypeError alike
        raise PrivacyError(NOT_A_CONTEXT.format(error=type(error).__name__)) from None
    check_public(context, parameters)
    return context


def load_secret(data: bytes, parameters: CKKSParameters, threads: int | None = None) -> ts.Context:
    """The client's own keys read back (`EncryptedAlertClient.secret_bytes`): refused unless
    they hold the secret key and were made for `parameters`' chain."""
    try:
        context = ts.context_from(bytes(data), n_threads=threads)
    except Exception as error:  # TenSEAL raises ValueError/RuntimeError/TypeError alike
        raise PrivacyError(
            f"the kept keys are not a TenSEAL context ({type(error).__name__})"
        ) from None
    if not context.has_secret_key():
        raise PrivacyError("the kept keys hold no secret key; they cannot decrypt")
    check_parameters(context, parameters)
    return context


def check_public(context: ts.Context, parameters: CKKSParameters | None = None) -> None:
    """Refuse a context holding the secret key or lacking evaluation keys (and, given
    `parameters`, one made for another chain)."""
    if context.has_secret_key():
        raise PrivacyError(
            "public_context carries the secret key; the server must never hold it: send "
            "EncryptedAlertClient.public_context() (serialised without the secret key)"
        )
    missing = [
        name
        for name, present in (
            ("relinearisation", context.has_relin_keys()),
            ("Galois", context.has_galois_keys()),
        )
        if not present
    ]
    if missing:
        raise PrivacyError(
            f"public_context has no {' or '.join(missing)} keys; the server needs them for x² "
            "and rotations: serialise with save_relin_keys and save_galois_keys"
        )
    if parameters is not None:
        check_parameters(context, parameters)


def modulus_chain_bits(context: ts.Context) -> tuple[int, ...]:
    """The bit size of every prime of the context's coefficient modulus, q0 first and the
    special prime last (TenSEAL's order). SEAL's primes are not exposed to Python, so each
    is read as the drop in total bits from one level of the chain to the next."""
    totals = []
    level = context.seal_context().data.key_context_data()
    while level is not None:
        totals.append(level.total_coeff_modulus_bit_count())
        level = level.next_context_data()
    dropped = [above - below for above, below in pairwise(totals)]
    return (totals[-1], *reversed(dropped[1:]), dropped[0])


def check_parameters(context: ts.Context, parameters: CKKSParameters) -> None:
    """Refuse a context made for another chain: another degree, other primes or another
    scale would not fail but decrypt wrong logits. Refuse also one with automatic
    rescaling or relinearisation off, which the plan relies on."""
    seal = context.seal_context().data
    degree = seal.key_context_data().parms().poly_modulus_degree()
    chain = modulus_chain_bits(context)
    scale = context.global_scale
    if (degree, chain, scale) != (
        parameters.poly_modulus_degree,
        tuple(parameters.coeff_mod_bit_sizes),
        2.0**parameters.scale_bits,
    ):
        scale_bits = f"2^{math.log2(scale):g}" if scale > 0 else f"{scale:g}"
        raise OtherChainError(
            f"public_context has N = {degree}, primes of {list(chain)} bits and scale "
            f"{scale_bits}, but this model's chain is {parameters.describe()}; make the keys "
            "from the model's encryption spec (EncryptedAlertClient.from_spec)"
        )
    off = [
        name
        for name, on in (
            ("auto_rescale", context.auto_rescale),
            ("auto_relin", context.auto_relin),
            ("auto_mod_switch", context.auto_mod_switch),
        )
        if not on
    ]
    if off:
        raise PrivacyError(
            f"public_context has {', '.join(off)} switched off; the model's plan needs them "
            "on (TenSEAL's default): make the keys with EncryptedAlertClient.from_spec"
        )
