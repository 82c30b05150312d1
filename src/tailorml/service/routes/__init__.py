"""One `APIRouter` per resource, included by `service.app.create_app` in this order (the
order of /openapi.json): status, entries, treatments, devicestatus, profile, properties,
alerts, model, personalization, candidates, encrypted, people, review (the web pages)."""
