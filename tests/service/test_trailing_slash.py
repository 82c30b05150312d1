"""A trailing slash is answered as the path without it, or a 4xx in the API's error
shape; never a redirect (a 307 loses the body on some uploaders; bad input round 3)."""

from __future__ import annotations


def test_a_slash_as_a_treatment_id_is_a_404_not_a_redirect(app, made):
    client, _ = app
    answer = client.delete("/api/v1/treatments/%2F", headers=made.people["alice"].secret)
    assert answer.status_code == 404
    assert answer.json() == {"status": 404, "message": "Not Found"}
    assert "location" not in answer.headers


def test_a_trailing_slash_is_answered_as_the_path_without_it(app, made):
    client, _ = app
    alice = made.people["alice"]
    plain = client.get("/api/v1/model", headers=alice.secret)
    slashed = client.get("/api/v1/model/", headers=alice.secret)
    assert slashed.status_code == 200 and slashed.json() == plain.json()
    # a POST keeps its body: nothing is lost to a redirect
    status = [{"device": "xDrip-trailing-slash", "created_at": "2025-11-05T10:00:00Z"}]
    posted = client.post("/api/v1/devicestatus/", json=status, headers=alice.secret)
    assert posted.status_code == 200 and posted.json()[0]["device"] == "xDrip-trailing-slash"


def test_no_path_of_the_api_redirects_with_a_trailing_slash(app, made):
    client, _ = app
    schema = client.get("/openapi.json").json()
    for path, operations in schema["paths"].items():
        concrete = path.replace("{names}", "bgnow").replace("{treatment_id}", "x")
        concrete = concrete.replace("{job_id}", "1").replace("{candidate_id}", "1")
        for method in operations:
            for tail in ("/", "//", "/%2F"):
                answer = client.request(
                    method.upper(), concrete + tail, headers=made.people["alice"].secret
                )
                assert not 300 <= answer.status_code < 400, (method, concrete + tail)
