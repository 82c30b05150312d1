"""Encrypted inference with TenSEAL: the server holds a public context only, and its
encrypted logits match the plaintext model within the CKKS tolerance."""

import numpy as np
import pytest
import tenseal as ts

from tailorml.privacy.check import LOGIT_TOLERANCE
from tailorml.privacy.client import EncryptedAlertClient
from tailorml.privacy.context import (
    load_public,
    modulus_chain_bits,
    public_bytes,
    secret_context,
)
from tailorml.privacy.params import CKKSParameters, PrivacyError
from tailorml.privacy.plan import plain_logits
from tailorml.privacy.server import EncryptedModel, evaluate_encrypted
from tailorml.privacy.wire import pack_parts, unpack_parts

from .conftest import glucose_windows, he_model


@pytest.fixture(scope="module")
def keys(small_model):
    encrypted = EncryptedModel(small_model, "small")
    client = EncryptedAlertClient.from_spec(encrypted.public_spec())
    public = client.public_context()
    return encrypted, client, public, load_public(public, encrypted.plan.parameters)


def test_the_server_context_has_no_secret_key_and_cannot_decrypt(keys):
    _encrypted, client, _public, server = keys
    assert client.context.has_secret_key()
    assert not server.has_secret_key() and server.is_public()
    vector = ts.ckks_vector_from(server, client.encrypt(glucose_windows(1)))
    with pytest.raises(ValueError, match=r"doesn.t hold a secret_key"):
        vector.decrypt()


@pytest.mark.parametrize("n_windows", [1, 5])
def test_encrypted_logits_match_the_plaintext_model(keys, n_windows):
    encrypted, client, _public, server = keys
    windows = glucose_windows(n_windows, seed=n_windows)
    answer = evaluate_encrypted(encrypted, server, client.encrypt(windows))
    logits = client.decrypt(answer, n_windows)
    plain = plain_logits(encrypted.plan, windows)
    assert logits.shape == (n_windows, 3)
    assert np.abs(logits - plain).max() < LOGIT_TOLERANCE
    policy = encrypted.policy
    assert (client.decide(logits) == policy.decide_logits(plain)).all()


def test_a_model_with_input_levels_runs_encrypted():
    # the client encodes max(k - CGM, 0) before encrypting; the server never sees a reading
    model = he_model(0, "relu_poly", channels=1, levels=(75.0, 90.0, 120.0))
    encrypted = EncryptedModel(model, "levels")
    client = EncryptedAlertClient.from_spec(encrypted.public_spec())
    server = load_public(client.public_context(), encrypted.plan.parameters)
    windows = glucose_windows(6, seed=3)
    logits = client.decrypt(evaluate_encrypted(encrypted, server, client.encrypt(windows)), 6)
    assert np.abs(logits - plain_logits(encrypted.plan, windows)).max() < LOGIT_TOLERANCE


def test_evaluate_reads_the_context_from_bytes_too(keys):
    encrypted, client, public, _ = keys
    window = glucose_windows(1, seed=7)
    answer = evaluate_encrypted(encrypted, public, client.encrypt(window))
    logits = client.decrypt(answer)
    assert np.abs(logits[:1] - plain_logits(encrypted.plan, window)).max() < LOGIT_TOLERANCE


def test_a_context_with_the_secret_key_is_refused(keys):
    encrypted, client, _, _ = keys
    leaked = client.context.serialize(save_secret_key=True)
    with pytest.raises(PrivacyError, match="carries the secret key; the server must never"):
        evaluate_encrypted(encrypted, leaked, client.encrypt(glucose_windows(1)))


def test_a_context_without_evaluation_keys_is_refused(keys):
    _encrypted, client, _, _ = keys
    bare = client.context.serialize(save_galois_keys=False, save_relin_keys=False)
    with pytest.raises(PrivacyError, match="no relinearisation or Galois keys"):
        load_public(bare)


def test_a_context_for_another_chain_is_refused(keys):
    encrypted = keys[0]
    other = secret_context(CKKSParameters(8192, (50, 35, 50), 35))  # one level: small keys
    other.make_context_public()
    with pytest.raises(
        PrivacyError, match=r"primes of \[50, 35, 50\] bits.*chain is CKKS N = 8192"
    ):
        load_public(other.serialize(), encrypted.plan.parameters)


def test_the_prime_sizes_are_read_back_from_a_context_in_tenseal_order():
    # q0 first, the special prime last; the asymmetric middle proves the order
    context = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[45, 40, 35, 35, 50])
    assert modulus_chain_bits(context) == (45, 40, 35, 35, 50)


@pytest.mark.parametrize(
    ("parameters", "match"),
    [
        # same N, level count and total bits (205) as the model's chain: only the primes differ
        (CKKSParameters(8192, (45, 40, 35, 35, 50), 35), r"primes of \[45, 40, 35, 35, 50\]"),
        (CKKSParameters(8192, (50, 35, 35, 35, 50), 30), r"scale 2\^30, but"),
    ],
)
def test_a_context_with_other_primes_or_scale_is_refused(keys, parameters, match):
    encrypted, client, _, _ = keys
    assert client.parameters != parameters
    other = EncryptedAlertClient(client.layout, parameters, client.n_classes, client.max_batch)
    with pytest.raises(PrivacyError, match=match):
        evaluate_encrypted(encrypted, other.public_context(), other.encrypt(glucose_windows(1)))


@pytest.mark.parametrize("flag", ["auto_rescale", "auto_relin", "auto_mod_switch"])
def test_a_context_with_automatic_rescaling_off_is_refused(keys, flag):
    encrypted, client, _, _ = keys
    context = client.context.copy()
    setattr(context, flag, False)
    public = public_bytes(context)
    with pytest.raises(PrivacyError, match=f"{flag} switched off"):
        load_public(public, encrypted.plan.parameters)


def test_a_ciphertext_at_another_scale_is_refused(keys):
    encrypted, client, _, server = keys
    slots = ts.ckks_vector_from(client.context, client.encrypt(glucose_windows(1))).decrypt()
    other = ts.ckks_vector(client.context, slots, scale=2.0**45).serialize()
    with pytest.raises(PrivacyError, match=r"at scale 2\^45, this model's chain encrypts at 2\^"):
        evaluate_encrypted(encrypted, server, other)


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"", "encrypted_window is empty"),
        (b"not a ciphertext", "not a CKKS vector for this context"),
    ],
)
def test_a_bad_ciphertext_is_a_one_line_error(keys, payload, match):
    encrypted, _, _, server = keys
    with pytest.raises(PrivacyError, match=match):
        evaluate_encrypted(encrypted, server, payload)


def test_a_ciphertext_of_the_wrong_size_is_refused(keys):
    encrypted, client, _, server = keys
    wrong = ts.ckks_vector(client.context, [100.0] * 40).serialize()
    with pytest.raises(PrivacyError, match=r"holds 40 slots; this model reads 32 slots per window"):
        evaluate_encrypted(encrypted, server, wrong)


def test_too_many_windows_for_one_ciphertext_are_refused(keys):
    _, client, _, _ = keys
    with pytest.raises(PrivacyError, match=r"33 windows do not fit one ciphertext \(at most 32\)"):
        client.encrypt(glucose_windows(33))


def test_the_answer_frame_round_trips_and_rejects_garbage():
    assert unpack_parts(pack_parts([b"a", b"", b"xyz"])) == [b"a", b"", b"xyz"]
    with pytest.raises(PrivacyError, match="tailorml header"):
        unpack_parts(b"junk")
    with pytest.raises(PrivacyError, match="truncated"):
        unpack_parts(pack_parts([b"abcdef"])[:-2])


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            lambda w: w / 18.016,
            r"window 0: CGM reading 0 is [\d.]+, outside 20–1000 mg/dL; is it in mmol/L",
        ),
        (
            lambda w: np.where(np.arange(24) == 5, 1e4, w),
            r"window 0: CGM reading 5 is 10000, outside",
        ),
        (
            lambda w: np.where(np.arange(24) == 7, 12.0, w),
            r"CGM reading 7 is 12, outside 20–1000 mg/dL$",
        ),
    ],
)
def test_readings_outside_a_sensor_s_range_are_refused_before_encryption(keys, change, match):
    _, client, _, _ = keys
    window = np.full((1, 1, 24), 150.0)
    with pytest.raises(PrivacyError, match=match):
        client.encrypt(change(window))


def test_an_answer_under_other_keys_is_refused_as_noise(keys):
    encrypted, _, public, _ = keys
    stranger = EncryptedAlertClient.from_spec(encrypted.public_spec())  # other keys, same chain
    answer = evaluate_encrypted(encrypted, public, stranger.encrypt(glucose_windows(2)))
    with pytest.raises(PrivacyError, match="decrypted logits are noise"):
        stranger.decrypt(answer, 2)


def test_the_mmol_hint_looks_at_the_offending_window_only(keys):
    _, client, _, _ = keys
    windows = np.stack([np.full((1, 24), 300.0), np.full((1, 24), 8.0)])  # mg/dL, then mmol/L
    with pytest.raises(PrivacyError, match=r"window 1: CGM reading 0 is 8, .* is it in mmol/L"):
        client.encrypt(windows)
    with pytest.raises(PrivacyError, match=r"is 1000.0001, outside 20–1000 mg/dL$"):
        client.encrypt(np.full((1, 1, 24), 1000.0001))
