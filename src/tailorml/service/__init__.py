"""The cloud service (scenarios 1 and 2 of the soft-personalization seed): a
Nightscout-compatible API for CGM uploaders, live alerts from each person's active model,
personalization requested over the API and reviewed by the assigned clinician.

Rooms: `crypto` (keys, encryption at rest), `auth` (tokens, roles, who may see whom),
`nightscout` (the entry/treatment shapes uploaders speak), `runtime` (ONNX models, cached
per person), `live` (windows and alert decisions), `jobs` (personalization in a worker
process), `app` (assembles the HTTP app), `routes` (one router per resource, the
server-rendered review pages among them), `deps` (what routes share), `errors` (every
error's answer), `openapi` (what /openapi.json says of each route). Storage is the
registry's (`tailorml.registry.people`); this package holds no SQL. Guide: docs/service.md.
"""
