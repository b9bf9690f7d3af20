//! Mailgun carries the delivery key as the user variable `v:kmailops-delivery-key`, which
//! comes back in Mailgun's events as `user-variables`.

mod common;

use common::{Answer, full_message, multipart, sender_spec, serve};
use kmailops::message::delivery_key;
use kmailops::provider::{Credentials, build_provider, http_client};

#[tokio::test]
async fn the_delivery_key_is_sent_as_a_user_variable_only_when_set() {
    let mock = serve(|_| {
        Answer::new(
            200,
            r#"{"id":"<1@mg.example.com>","message":"Queued. Thank you."}"#,
        )
    })
    .await;
    let spec = sender_spec(&format!(
        "sender: {{address: noreply@mg.example.com}}\nmailgun: {{domain: mg.example.com, apiKeySecretRef: {{name: mg, key: k}}, baseUrl: '{}'}}",
        mock.url
    ));
    let p = build_provider(&spec, Credentials::new("key-0123456789"), &http_client())
        .expect("provider");
    let mut msg = full_message(&spec);
    p.send(&msg).await.expect("sent");
    msg.delivery_key = Some(delivery_key(
        "mail",
        "welcome",
        &msg.delivery_hash,
        Some("t1"),
    ));
    p.send(&msg).await.expect("sent");
    let reqs = mock.requests();
    let var = |i: usize| {
        multipart(&reqs[i])
            .into_iter()
            .find(|part| part.name == "v:kmailops-delivery-key")
            .map(|part| part.text())
    };
    assert_eq!(var(0), None);
    assert_eq!(var(1), msg.delivery_key);
}
