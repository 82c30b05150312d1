"""Encrypted inference: the cloud computes the glucose alert on readings it cannot read.

The server holds the HE-friendly model in plaintext (inspectable, with its card and alert
policy) and the client's public CKKS context (no secret key); the client encrypts its
windows, the server evaluates, the client decrypts the logits and applies the model's alert
policy (docs/privacy.md).

For the service: `server.EncryptedModel(model)` once per model (`public_spec()` for its
clients), `context.load_public(bytes)` once per person, then
`server.evaluate_encrypted(model, public_context, encrypted_window) -> bytes` per request.
The client side is `tailorml.privacy.client.EncryptedAlertClient`.
"""
