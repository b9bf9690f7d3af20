use super::*;

fn email(yaml: &str) -> EmailSpec {
    serde_yaml::from_str(yaml).expect("test Email spec")
}

fn sender() -> EmailSenderConfigSpec {
    serde_yaml::from_str(
        r#"
sender: {address: noreply@example.com, name: Example}
smtp: {host: smtp.example.com}
"#,
    )
    .expect("test sender spec")
}

fn base_email() -> EmailSpec {
    email(
        r#"
to: ["Jane <jane@example.org>", bob@example.org]
cc: [carol@example.org]
bcc: [audit@example.org]
replyTo: help@example.com
subject: Hello
text: Hi
html: <p>Hi</p>
headers: {X-Campaign: spring, X-Team: ops}
tags: [welcome, onboarding]
"#,
    )
}

fn content() -> RenderedContent {
    RenderedContent {
        subject: "Hello".into(),
        text: Some("Hi".into()),
        html: Some("<p>Hi</p>".into()),
    }
}

fn pdf() -> AttachmentData {
    AttachmentData {
        filename: "report.pdf".into(),
        content_type: "application/pdf".into(),
        content: b"%PDF-1.4 test".to_vec(),
    }
}

fn build(e: &EmailSpec, s: &EmailSenderConfigSpec, c: RenderedContent) -> OutgoingMessage {
    build_message(e, s, "mail/primary", c, vec![pdf()]).expect("valid message")
}

fn hash_of(e: &EmailSpec, s: &EmailSenderConfigSpec, c: RenderedContent) -> String {
    build(e, s, c).delivery_hash
}

fn hash_with_attachment(a: AttachmentData) -> String {
    build_message(&base_email(), &sender(), "mail/primary", content(), vec![a])
        .expect("valid message")
        .delivery_hash
}

#[test]
fn a_valid_email_becomes_a_message_with_parsed_mailboxes() {
    let m = build(&base_email(), &sender(), content());
    assert_eq!(m.from.to_string(), "Example <noreply@example.com>");
    assert_eq!(m.to[0].name.as_deref(), Some("Jane"));
    assert_eq!(m.to[1].address, "bob@example.org");
    assert_eq!(m.cc[0].address, "carol@example.org");
    assert_eq!(m.bcc[0].address, "audit@example.org");
    assert_eq!(m.reply_to.unwrap().address, "help@example.com");
    assert_eq!(
        m.headers.get("X-Campaign").map(String::as_str),
        Some("spring")
    );
    assert_eq!(m.tags, ["welcome", "onboarding"]);
    assert_eq!(m.delivery_hash.len(), 64);
}

#[test]
fn the_delivery_hash_is_stable_across_builds_and_releases() {
    let a = hash_of(&base_email(), &sender(), content());
    let b = hash_of(&base_email(), &sender(), content());
    assert_eq!(a, b);
    // Pinned: a change of the encoding would make every Sent Email look changed after an
    // upgrade. Bump ENCODING_VERSION deliberately if this has to change.
    assert_eq!(
        a,
        "0dc72bb567ee68e16b4e1a83397234184f7d095231d85c266f6c4f87bae01dbd"
    );
}

#[test]
fn the_message_id_derives_from_the_hash_and_the_sender_domain() {
    let m = build(&base_email(), &sender(), content());
    assert_eq!(
        m.message_id,
        format!("<{}@example.com>", &m.delivery_hash[..32])
    );
}

type Edit = fn(&mut EmailSpec);

#[test]
fn every_input_that_reaches_the_recipient_changes_the_hash() {
    let base = hash_of(&base_email(), &sender(), content());
    let mut changed: Vec<(&str, String)> = Vec::new();

    let other_identity = build_message(
        &base_email(),
        &sender(),
        "mail/other",
        content(),
        vec![pdf()],
    )
    .expect("valid")
    .delivery_hash;
    changed.push(("sender identity", other_identity));

    let mut s = sender();
    s.sender.address = "hello@example.com".into();
    changed.push(("from address", hash_of(&base_email(), &s, content())));
    let mut s = sender();
    s.sender.name = Some("Other".into());
    changed.push(("from name", hash_of(&base_email(), &s, content())));

    let edits: Vec<(&str, Edit)> = vec![
        ("to", |e| e.to.push("dan@example.org".into())),
        ("to name", |e| e.to[0] = "Janet <jane@example.org>".into()),
        ("cc", |e| e.cc.push("dan@example.org".into())),
        ("bcc", |e| e.bcc.clear()),
        ("recipient moved from to to cc", |e| {
            let b = e.to.pop().unwrap_or_default();
            e.cc.push(b);
        }),
        ("reply-to", |e| {
            e.reply_to = Some("other@example.com".into())
        }),
        ("header value", |e| {
            e.headers.insert("X-Campaign".into(), "autumn".into());
        }),
        ("header name", |e| {
            let v = e.headers.remove("X-Team").unwrap_or_default();
            e.headers.insert("X-Group".into(), v);
        }),
        ("tags", |e| e.tags.push("extra".into())),
    ];
    for (what, edit) in edits {
        let mut e = base_email();
        edit(&mut e);
        changed.push((what, hash_of(&e, &sender(), content())));
    }

    let c = |subject: &str, text: Option<&str>, html: Option<&str>| RenderedContent {
        subject: subject.into(),
        text: text.map(Into::into),
        html: html.map(Into::into),
    };
    changed.push((
        "subject",
        hash_of(
            &base_email(),
            &sender(),
            c("Hello!", Some("Hi"), Some("<p>Hi</p>")),
        ),
    ));
    changed.push((
        "text",
        hash_of(
            &base_email(),
            &sender(),
            c("Hello", Some("Hi!"), Some("<p>Hi</p>")),
        ),
    ));
    changed.push((
        "html",
        hash_of(
            &base_email(),
            &sender(),
            c("Hello", Some("Hi"), Some("<p>Hi!</p>")),
        ),
    ));
    changed.push((
        "html dropped",
        hash_of(&base_email(), &sender(), c("Hello", Some("Hi"), None)),
    ));
    // Moving a character across a field boundary must not collide (no plain concatenation).
    changed.push((
        "boundary shift",
        hash_of(
            &base_email(),
            &sender(),
            c("Hell", Some("oHi"), Some("<p>Hi</p>")),
        ),
    ));

    changed.push((
        "attachment name",
        hash_with_attachment(AttachmentData {
            filename: "other.pdf".into(),
            ..pdf()
        }),
    ));
    changed.push((
        "attachment type",
        hash_with_attachment(AttachmentData {
            content_type: "application/octet-stream".into(),
            ..pdf()
        }),
    ));
    changed.push((
        "attachment content",
        hash_with_attachment(AttachmentData {
            content: b"%PDF-1.5".to_vec(),
            ..pdf()
        }),
    ));

    let mut seen = std::collections::BTreeSet::from([base]);
    for (what, hash) in changed {
        assert!(
            seen.insert(hash),
            "changing the {what} did not change the hash (or collided)"
        );
    }
}

#[test]
fn map_order_metadata_and_template_variables_do_not_change_the_hash() {
    let reordered = email(
        r#"
tags: [welcome, onboarding]
headers: {X-Team: ops, X-Campaign: spring}
html: <p>Hi</p>
text: Hi
subject: Hello
replyTo: help@example.com
bcc: [audit@example.org]
cc: [carol@example.org]
to: ["Jane <jane@example.org>", bob@example.org]
variables: {name: Jane}
resendPolicy: OnChange
"#,
    );
    assert_eq!(
        hash_of(&reordered, &sender(), content()),
        hash_of(&base_email(), &sender(), content())
    );
}

#[test]
fn the_sender_reply_to_applies_unless_the_email_sets_its_own() {
    let mut s = sender();
    s.reply_to = Some("Support <support@example.com>".into());
    let mut e = base_email();
    e.reply_to = None;
    assert_eq!(
        build(&e, &s, content()).reply_to.unwrap().address,
        "support@example.com"
    );
    assert_eq!(
        build(&base_email(), &s, content())
            .reply_to
            .unwrap()
            .address,
        "help@example.com"
    );
}

fn error_of(e: &EmailSpec, c: RenderedContent, attachments: Vec<AttachmentData>) -> InvalidMessage {
    build_message(e, &sender(), "mail/primary", c, attachments).expect_err("should be invalid")
}

#[test]
fn invalid_input_is_refused_naming_the_field() {
    let with = |edit: fn(&mut EmailSpec)| {
        let mut e = base_email();
        edit(&mut e);
        error_of(&e, content(), vec![]).field
    };
    assert_eq!(with(|e| e.to[1] = "not-an-address".into()), "spec.to[1]");
    assert_eq!(with(|e| e.to.clear()), "spec.to");
    assert_eq!(with(|e| e.cc = vec!["x@example.org".into(); 11]), "spec.cc");
    assert_eq!(
        with(|e| e.bcc[0] = "a@b.c\nBcc: evil@x.y".into()),
        "spec.bcc[0]"
    );
    assert_eq!(with(|e| e.reply_to = Some("nope".into())), "spec.replyTo");
    assert_eq!(
        with(|e| {
            e.headers.insert("From".into(), "evil@example.com".into());
        }),
        "spec.headers[\"From\"]"
    );
    assert_eq!(
        with(|e| {
            e.headers.insert("X-Evil".into(), "a\r\nBcc: x@y.z".into());
        }),
        "spec.headers[\"X-Evil\"]"
    );
    assert_eq!(with(|e| e.tags.push(String::new())), "spec.tags[2]");
    // Names differ only in case: both would be hashed, one sent. (The map is sorted, so the
    // lower-case twin comes second.)
    assert_eq!(
        with(|e| {
            e.headers.insert("x-campaign".into(), "autumn".into());
        }),
        "spec.headers[\"x-campaign\"]"
    );
    assert_eq!(
        with(|e| e.to[0] = "a@example.org, Evil <evil@x.example>".into()),
        "spec.to[0]"
    );

    let e = base_email();
    let err = error_of(
        &e,
        RenderedContent {
            subject: " ".into(),
            ..content()
        },
        vec![],
    );
    assert_eq!(err.field, "spec.subject");
    let err = error_of(
        &e,
        RenderedContent {
            subject: "a\nb".into(),
            ..content()
        },
        vec![],
    );
    assert_eq!(err.field, "spec.subject");
    let err = error_of(
        &e,
        RenderedContent {
            subject: "s".into(),
            text: Some("".into()),
            html: None,
        },
        vec![],
    );
    assert_eq!(err.field, "spec.text");
    let err = error_of(
        &e,
        content(),
        vec![AttachmentData {
            filename: "../etc/passwd".into(),
            ..pdf()
        }],
    );
    assert_eq!(err.field, "spec.attachments[0].filename");
    let err = error_of(
        &e,
        content(),
        vec![
            pdf(),
            AttachmentData {
                content_type: "pdf".into(),
                ..pdf()
            },
        ],
    );
    assert_eq!(err.field, "spec.attachments[1].contentType");
    let big = AttachmentData {
        content: vec![0; MAX_ATTACHMENT_BYTES + 1],
        ..pdf()
    };
    assert_eq!(error_of(&e, content(), vec![big]).field, "spec.attachments");
}

#[test]
fn an_error_reads_as_field_then_fix() {
    let mut e = base_email();
    e.to[1] = "bob".into();
    let text = error_of(&e, content(), vec![]).to_string();
    assert!(text.starts_with("spec.to[1]: `bob` "), "{text}");
    assert!(text.contains("user@example.com"), "{text}");
}

#[test]
fn a_bad_sender_address_names_the_sender_config() {
    let mut s = sender();
    s.sender.address = "nobody".into();
    let err =
        build_message(&base_email(), &s, "mail/primary", content(), vec![]).expect_err("invalid");
    assert_eq!(err.field, "EmailSenderConfig mail/primary spec.sender");
}

#[test]
fn content_types_are_guessed_from_the_extension() {
    assert_eq!(guess_content_type("Report.PDF"), "application/pdf");
    assert_eq!(guess_content_type("data.csv"), "text/csv");
    assert_eq!(guess_content_type("noext"), "application/octet-stream");
}

#[test]
fn two_emails_of_equal_content_get_different_message_ids_and_one_email_keeps_its_own() {
    let e = base_email();
    let m = || build(&e, &sender(), content());
    let a = m().for_delivery("shop", "alert-1", None);
    let b = m().for_delivery("shop", "alert-2", None);
    assert_eq!(a.delivery_hash, b.delivery_hash, "equal content");
    assert_ne!(a.message_id, b.message_id);
    assert_ne!(a.delivery_key, b.delivery_key);
    // Every attempt of one delivery carries the same id; a retry token makes a new one.
    assert_eq!(
        a.message_id,
        m().for_delivery("shop", "alert-1", None).message_id
    );
    assert_ne!(
        a.message_id,
        m().for_delivery("shop", "alert-1", Some("2")).message_id
    );
    assert!(a.message_id.ends_with("@example.com>"), "{}", a.message_id);
}
