"""The server side: evaluate the HE-friendly model on a window it cannot read.

`evaluate_encrypted(model, public_context, encrypted_window) -> bytes` is pure: it reads
the client's public context (no secret key: refused otherwise) and its ciphertext, runs
the plan of `tailorml.privacy.plan` with TenSEAL, and returns the encrypted logits. It
never logs, stores or caches the context or the ciphertexts; only the model's compiled
plaintext weights are cached (in an `EncryptedModel` the caller keeps).

Cost per ciphertext (1 window up to a full batch): one matrix product with one non-zero diagonal per
kernel tap, one x², and per head a strided sum of log2(features) power-of-two rotations.
"""

from __future__ import annotations

import math

import tenseal as ts
from torch import nn

from tailorml.privacy.context import check_public, load_public
from tailorml.privacy.params import CKKSParameters, PrivacyError
from tailorml.privacy.plan import HEPlan, compile_plan
from tailorml.privacy.wire import pack_parts


class EncryptedModel:
    """A trained HE-friendly model compiled for encrypted evaluation: its plan and the
    TenSEAL plaintext matrices per batch size (built once, reused for every request)."""

    def __init__(self, model: nn.Module, name: str | None = None) -> None:
        self.plan: HEPlan = compile_plan(model, name)
        self.policy = getattr(model, "policy", None)
        self._matrices: dict[int, ts.PlainTensor] = {}

    def public_spec(self) -> dict:
        """What the client needs (layout, CKKS parameters, classes, alert policy); no weights."""
        spec = self.plan.public_spec()
        spec["policy"] = self.policy.to_dict() if self.policy is not None else None
        return spec

    def conv_matrix(self, batch: int) -> ts.PlainTensor:
        if batch not in self._matrices:
            self._matrices[batch] = ts.plain_tensor(self.plan.conv_matrix(batch))
        return self._matrices[batch]

    def batch_of(self, vector: ts.CKKSVector) -> int:
        """Windows in `vector` (from its size), or a one-line error."""
        per_window = self.plan.layout.window_slots
        size = vector.size()
        batch = size // per_window
        if size % per_window or batch & (batch - 1) or not 1 <= batch <= self.plan.max_batch:
            raise PrivacyError(
                f"encrypted_window holds {size} slots; this model reads {per_window} slots "
                f"per window, 1 to {self.plan.max_batch} windows (a power of two) per "
                "ciphertext: encrypt with EncryptedAlertClient for this model"
            )
        return batch

    def forward(self, vector: ts.CKKSVector) -> list[ts.CKKSVector]:
        """Encrypted logits, one vector per class (slot b: window b)."""
        plan, batch = self.plan, self.batch_of(vector)
        features = vector.mm(self.conv_matrix(batch))  # level 1
        features = features + plan.conv_bias_vector(batch).tolist()
        features.square_()  # level 2
        heads = []
        for weights, bias in zip(plan.heads, plan.head_bias, strict=True):
            head = features.enc_matmul_plain(weights.tolist(), batch)  # level 3
            heads.append(head + float(bias))
        if plan.mix is None:
            return heads
        for head in heads:
            head.square_()  # level 4
        logits = []
        for weights, bias in zip(plan.mix, plan.mix_bias, strict=True):
            terms = [head * float(w) for head, w in zip(heads, weights, strict=True) if w]  # 5
            total = terms[0]
            for term in terms[1:]:
                total += term
            logits.append(total + float(bias))
        return logits


def read_window(context: ts.Context, data: bytes, parameters: CKKSParameters) -> ts.CKKSVector:
    """The client's ciphertext, checked to be one fresh ciphertext (all levels left) at the
    chain's scale: another scale would not fail but give wrong logits, or fail mid-plan."""
    if not isinstance(data, bytes | bytearray) or not data:
        raise PrivacyError("encrypted_window is empty; send EncryptedAlertClient.encrypt(...)")
    try:
        vector = ts.ckks_vector_from(context, bytes(data))
        ciphertexts = vector.ciphertext()
    except Exception as error:  # TenSEAL raises ValueError/RuntimeError/TypeError alike
        raise PrivacyError(
            f"encrypted_window is not a CKKS vector for this context ({type(error).__name__}); "
            "send EncryptedAlertClient.encrypt(...) made with the same keys"
        ) from None
    fresh = (
        len(ciphertexts) == 1
        and ciphertexts[0].size() == 2
        and ciphertexts[0].coeff_modulus_size() == parameters.levels + 1
    )
    if not fresh:
        raise PrivacyError(
            "encrypted_window is not one freshly encrypted ciphertext (too large, or levels "
            "already used); send EncryptedAlertClient.encrypt(...)"
        )
    if ciphertexts[0].scale != 2.0**parameters.scale_bits:
        raise PrivacyError(
            f"encrypted_window is at scale 2^{math.log2(max(ciphertexts[0].scale, 1e-300)):g}, "
            f"this model's chain encrypts at 2^{parameters.scale_bits}; encrypt with "
            "EncryptedAlertClient.from_spec for this model"
        )
    return vector


def forward_checked(model: EncryptedModel, vector: ts.CKKSVector) -> list[ts.CKKSVector]:
    """`model.forward`, with TenSEAL's failures on a ciphertext that passed the checks but
    still does not fit (they come from the client's bytes) as a one-line error."""
    try:
        return model.forward(vector)
    except PrivacyError:
        raise
    except (ValueError, RuntimeError) as error:
        raise PrivacyError(
            f"encrypted_window could not be evaluated under your public context "
            f"({type(error).__name__}: {str(error)[:120]}); register a context made with "
            "EncryptedAlertClient.from_spec and encrypt with that client"
        ) from None


def evaluate_encrypted(
    model: nn.Module | EncryptedModel,
    public_context: bytes | ts.Context,
    encrypted_window: bytes,
    *,
    threads: int | None = None,
) -> bytes:
    """Encrypted logits of `model` on the client's `encrypted_window`, under the client's
    `public_context` (no secret key). Pure: nothing is logged or kept.

    `public_context` is the client's bytes, or a context already read with
    `privacy.context.load_public` (a service reads it once per person: with its Galois
    keys it weighs tens of MB and takes about a second to read). Pass an `EncryptedModel`
    to reuse its compiled weights across requests."""
    encrypted = model if isinstance(model, EncryptedModel) else EncryptedModel(model)
    parameters = encrypted.plan.parameters
    if isinstance(public_context, ts.Context):
        check_public(public_context, parameters)
        context = public_context
    else:
        context = load_public(public_context, parameters, threads)
    vector = read_window(context, encrypted_window, parameters)
    return pack_parts([logit.serialize() for logit in forward_checked(encrypted, vector)])
