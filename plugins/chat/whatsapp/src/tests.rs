use super::*;

/// A file of `shared/wire-formats/whatsapp/`, found beside the checkout.
fn fixture(name: &str) -> Vec<u8> {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = manifest
        .ancestors()
        .map(|dir| dir.join("shared/wire-formats/whatsapp").join(name))
        .find(|path| path.exists())
        .unwrap_or_else(|| panic!("shared/wire-formats/whatsapp/{name} not found above {}", manifest.display()));
    std::fs::read(path).unwrap()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect()
}

#[test]
fn the_signature_test_vector_verifies_and_anything_else_does_not() {
    let vectors: Value = serde_json::from_slice(&fixture("x-hub-signature-256.test-vector.json")).unwrap();
    for vector in vectors["vectors"].as_array().unwrap() {
        let (secret, body) = (vector["app_secret"].as_str().unwrap(), vector["body"].as_str().unwrap().as_bytes());
        let header = vector["expected_header"].as_str().unwrap();
        assert_eq!(signature(secret, body), header);
        assert_eq!(verify_signature(secret, &pairs(&[("X-Hub-Signature-256", header)]), body), Ok(()));
        let bare = vector["expected_hex"].as_str().unwrap();
        assert_eq!(verify_signature(secret, &pairs(&[("x-hub-signature-256", bare)]), body), Ok(()));
        for wrong in [
            pairs(&[("x-hub-signature-256", &header.replace('0', "1"))]),
            pairs(&[("x-hub-signature-256", "sha256=zz")]),
            pairs(&[("x-hub-signature", header)]),
            Vec::new(),
        ] {
            assert!(matches!(verify_signature(secret, &wrong, body), Err(Failure::Unauthenticated(_))), "{wrong:?}");
        }
        // One byte more in the body, or another secret, fails.
        let good = pairs(&[("x-hub-signature-256", header)]);
        assert!(verify_signature(secret, &good, b"test ").is_err());
        assert!(verify_signature("other", &good, body).is_err());
        assert!(verify_signature("", &good, body).is_err());
    }
}

#[test]
fn the_subscription_check_answers_the_challenge_only_to_the_right_token() {
    // Meta's sample request, as documented.
    let sample = String::from_utf8(fixture("verification-request.meta-docs.txt")).unwrap();
    let query: String = sample.split_once('?').unwrap().1.split_whitespace().collect();
    let query: Vec<(String, String)> = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    assert_eq!(verify_subscription(&query, Some("meatyhamhock")), Ok("1158201444".to_owned()));
    assert!(matches!(verify_subscription(&query, Some("other")), Err(Failure::Unauthenticated(_))));
    assert!(matches!(verify_subscription(&query, None), Err(Failure::Unauthenticated(_))));
    let unsubscribe = pairs(&[("hub.mode", "unsubscribe"), ("hub.challenge", "1"), ("hub.verify_token", "t")]);
    assert!(matches!(verify_subscription(&unsubscribe, Some("t")), Err(Failure::Invalid(_))));
    assert!(matches!(verify_subscription(&[], Some("t")), Err(Failure::Invalid(_))));
}

#[test]
fn real_webhooks_read_as_messages() {
    let text = parse_webhook(&fixture("webhook.inbound-text.json")).unwrap();
    assert_eq!(
        text,
        vec![Inbound {
            message_id: "wamid.xyzxyz".into(),
            sender_id: "972987654321".into(),
            chat_id: "972987654321".into(),
            text: Some("Body Text".into()),
            location: None,
            button_payload: None,
            sent_at_ms: 1_697_043_223_000,
            phone_number_id: Some("1122334455667".into()),
        }]
    );
    // The business-scoped user id shape reads the same.
    assert_eq!(parse_webhook(&fixture("webhook.inbound-text.bsuid-variant.json")).unwrap(), text);

    let location = parse_webhook(&fixture("webhook.inbound-location.json")).unwrap();
    assert_eq!(location[0].location, Some((12.25089, 43.90539)));
    assert_eq!(location[0].text, None);

    let pressed = parse_webhook(&fixture("webhook.inbound-interactive-button-reply.json")).unwrap();
    assert_eq!(pressed[0].button_payload.as_deref(), Some("callback_data"));
    assert_eq!(pressed[0].text.as_deref(), Some("title"));
    let quick = parse_webhook(&fixture("webhook.inbound-quick-reply-button.json")).unwrap();
    assert_eq!(
        (quick[0].message_id.as_str(), quick[0].button_payload.as_deref()),
        ("wamid.xsidjw", Some("callback_data"))
    );

    for status in ["sent", "delivered", "read", "failed"] {
        assert_eq!(parse_webhook(&fixture(&format!("webhook.status-{status}.json"))).unwrap(), Vec::new(), "{status}");
    }
    assert_eq!(parse_webhook(&fixture("webhook.status-delivered.bsuid-variant.json")).unwrap(), Vec::new());
}

#[test]
fn bodies_that_are_not_webhooks_are_refused() {
    for body in [&b"{"[..], b"[]", br#"{"object":"page","entry":[]}"#, br#"{"object":"whatsapp_business_account"}"#] {
        assert!(matches!(parse_webhook(body), Err(Failure::Invalid(_))), "{}", String::from_utf8_lossy(body));
    }
    let no_id = br#"{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages","value":{"messages":[{"from":"1","type":"text"}]}}]}]}"#;
    assert!(parse_webhook(no_id).is_err());
    // A sticker is a message with nothing berth reads.
    let sticker = br#"{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages","value":{"messages":[{"from":"1","id":"w1","timestamp":"1","type":"sticker","sticker":{}}]}}]}]}"#;
    let read = parse_webhook(sticker).unwrap();
    assert_eq!((read[0].text.as_ref(), read[0].location), (None, None));
}

fn choice(label: &str, payload: &str) -> Button {
    Button { label: label.into(), payload: Some(payload.into()), url: None }
}

#[test]
fn replies_render_as_the_graph_api_expects() {
    // Plain text: the shape pywa's test asserts (without its optional fields).
    let text = render("123", "hi", &[], true, None).unwrap();
    let expected: Value = serde_json::from_slice(&fixture("send-text.request.pywa-test.json")).unwrap();
    for key in ["messaging_product", "recipient_type", "type", "to", "text"] {
        assert_eq!(text[key], expected[key], "{key}");
    }

    // Up to three choices are reply buttons; titles are cut to 20 characters.
    let buttons =
        render("123", "Book it?", &[choice("Yes", "yes"), choice("No, show me something else", "no")], true, None)
            .unwrap();
    assert_eq!(buttons["type"], "interactive");
    assert_eq!(buttons["interactive"]["type"], "button");
    assert_eq!(buttons["interactive"]["body"]["text"], "Book it?");
    let rendered = buttons["interactive"]["action"]["buttons"].as_array().unwrap();
    assert_eq!(rendered[0], json!({"type": "reply", "reply": {"id": "yes", "title": "Yes"}}));
    assert_eq!(rendered[1]["reply"]["title"].as_str().unwrap().chars().count(), 20);

    // Four or more are a list of at most ten rows.
    let many: Vec<Button> = (1..=12).map(|n| choice(&format!("Option {n}"), &n.to_string())).collect();
    let list = render("123", "Pick one", &many, true, None).unwrap();
    assert_eq!(list["interactive"]["type"], "list");
    assert_eq!(list["interactive"]["action"]["sections"][0]["rows"].as_array().unwrap().len(), MAX_LIST_ROWS);

    // A link goes into the text.
    let pay = Button { label: "Pay".into(), payload: None, url: Some("https://pay.example/x".into()) };
    let linked = render("123", "Here is your link.", &[pay], true, None).unwrap();
    assert_eq!(linked["text"]["body"], "Here is your link.\n\nPay: https://pay.example/x");
    assert_eq!(linked["text"]["preview_url"], true);
}

#[test]
fn outside_the_window_only_a_template_is_sent() {
    let day = SERVICE_WINDOW_MS;
    assert!(within_window(10 * day, Some(10 * day - 1000)));
    assert!(!within_window(10 * day, Some(9 * day - 1)));
    assert!(!within_window(10 * day, None));

    let template = Template { name: "booking_reminder".into(), language: "en_GB".into() };
    let sent =
        render("123", "Your booking starts\n\nat 9:00.", &[choice("Yes", "yes")], false, Some(&template)).unwrap();
    assert_eq!(sent["type"], "template");
    assert_eq!(sent["template"]["name"], "booking_reminder");
    assert_eq!(sent["template"]["language"]["code"], "en_GB");
    assert_eq!(sent["template"]["components"][0]["parameters"][0]["text"], "Your booking starts at 9:00.");
    assert!(matches!(render("123", "hi", &[], false, None), Err(Failure::Invalid(_))));
}

#[test]
fn graph_api_answers_are_read() {
    let sent = fixture("send-message.response.nodejs-sdk-test.json");
    assert_eq!(read_send_answer(200, &sent).unwrap(), "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA");
    let expired = fixture("error.expired-access-token.pywa-test.json");
    assert!(matches!(read_send_answer(401, &expired), Err(Failure::Unavailable(message)) if message.contains("190")));
    let refused = br#"{"error":{"message":"Invalid parameter","type":"OAuthException","code":100,"fbtrace_id":"x"}}"#;
    assert!(matches!(read_send_answer(400, refused), Err(Failure::Invalid(_))));
    assert!(matches!(read_send_answer(503, b"oops"), Err(Failure::Unavailable(_))));
    assert!(matches!(read_send_answer(200, b"{}"), Err(Failure::Unavailable(_))));
}
