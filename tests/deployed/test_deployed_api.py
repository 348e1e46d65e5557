"""The API tests of test_serve.py that hold for any deployment, run unchanged against the
deployed service of tests/deployed/conftest.py (through the stack's gateway, so successive
requests may reach different replicas). Left out: tests that start their own process, read the
service's local files (prediction log) or count one replica's metrics."""

from test_serve import (  # noqa: F401  (pytest collects the imported tests)
    test_admin_reload_needs_the_admin_key,
    test_an_oversized_body_is_refused_from_its_length_before_it_is_read,
    test_bad_requests_get_stable_json_errors,
    test_batch_answers_each_image_and_enforces_the_limit,
    test_bounded_load_has_no_errors,
    test_decompression_bomb_is_refused_from_the_header,
    test_explain_gives_an_overlay_and_the_raw_map,
    test_health_readiness_metrics_docs_and_page,
    test_model_card,
    test_predict_every_input_form,
    test_prediction_routes_need_an_api_key,
    test_the_tiny_model_tells_discs_from_bars,
    test_unknown_routes_and_methods_are_json,
)


def test_feedback_finds_the_prediction_whichever_replica_answered(server):
    """The replicas share one prediction log: feedback sent on a new connection (the
    gateway balances round-robin over the replicas) finds every prediction."""
    import json

    from test_serve import png

    for _ in range(6):
        status, answer = server.json("POST", "/v1/predict", png(), "image/png")
        assert status == 200, answer
        status, body = server.json(
            "POST",
            "/v1/feedback",
            json.dumps({"request_id": answer["request_id"], "label": "COVID"}),
            "application/json",
        )
        assert status == 200, body
