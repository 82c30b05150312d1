"""Nightscout devicestatus: what the uploader, pump and loop report (battery, IOB, …), and
tailorml's decisions for follower apps, composed when read (`service.follower_status`)."""

from __future__ import annotations

from tailorml.service import follower_status
from tailorml.service import openapi as api
from tailorml.service.routes.documents import document_router

router = document_router(
    "devicestatus", api.UPLOAD_DEVICESTATUS, api.DEVICESTATUS, follower_status.devicestatus
)
