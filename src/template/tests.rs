//! Rendering as template authors meet it: escaping, strictness, names across templates and
//! built-ins, declared variables, and the limits.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;
use crate::api::{EmailTemplate, EmailTemplateSpec, TemplateVariable};

fn spec(subject: Option<&str>, text: Option<&str>, html: Option<&str>) -> EmailTemplateSpec {
    EmailTemplateSpec {
        subject: subject.map(str::to_string),
        text: text.map(str::to_string),
        html: html.map(str::to_string),
        variables: vec![],
        preview_variables: None,
        allowed_namespaces: Default::default(),
    }
}

fn template(ns: &str, name: &str, spec: EmailTemplateSpec) -> EmailTemplate {
    let mut t = EmailTemplate::new(name, spec);
    t.metadata.namespace = Some(ns.to_string());
    t
}

/// A library for namespace `shop` holding `templates` and the given built-ins.
fn library(templates: Vec<EmailTemplate>, builtins: Builtins) -> Library {
    let mut set = TemplateSet::default();
    for t in templates {
        let ns = t.metadata.namespace.clone().unwrap_or_default();
        let name = t.metadata.name.clone().unwrap_or_default();
        set.insert(&ns, &name, t);
    }
    Library::new("shop", Arc::new(set), Arc::new(builtins))
}

fn vars(v: serde_json::Value) -> Variables {
    serde_json::from_value(v).unwrap()
}

fn render_all(
    lib: &Library,
    name: &str,
    s: &EmailTemplateSpec,
    v: serde_json::Value,
) -> Result<crate::message::RenderedContent, RenderError> {
    render(lib, name, s, Some(&vars(v)), &Part::ALL)
}

#[test]
fn the_html_part_is_escaped_and_text_and_subject_are_not() {
    let s = spec(
        Some("Hi {{ name }}"),
        Some("Hello {{ name }}"),
        Some("<p>Hello {{ name }}</p>{{ trusted | safe }}"),
    );
    let lib = library(vec![], Builtins::default());
    let out = render_all(
        &lib,
        "welcome",
        &s,
        json!({"name": "<Ada & Co>", "trusted": "<b>x</b>"}),
    )
    .unwrap();
    assert_eq!(out.subject, "Hi <Ada & Co>");
    assert_eq!(out.text.as_deref(), Some("Hello <Ada & Co>"));
    assert_eq!(
        out.html.as_deref(),
        Some("<p>Hello &lt;Ada &amp; Co&gt;</p><b>x</b>")
    );
}

#[test]
fn an_undefined_variable_is_an_error_naming_it_with_part_line_and_column() {
    let s = spec(
        Some("Hi"),
        Some("Hello,\n  your order {{ order_id }} shipped"),
        None,
    );
    let lib = library(vec![], Builtins::default());
    let err = render_all(&lib, "shipped", &s, json!({})).unwrap_err();
    assert_eq!(err.reason, reasons::TEMPLATE_ERROR);
    assert_eq!(err.detail.template.as_deref(), Some("shipped/text"));
    assert_eq!(err.detail.line, Some(2));
    assert_eq!(err.detail.column, Some(17));
    assert!(
        err.message.contains("`order_id` is undefined"),
        "{}",
        err.message
    );
    assert!(
        err.message.starts_with("shipped/text line 2, column 17: "),
        "{}",
        err.message
    );

    // Attribute access on a missing key is just as strict.
    let s = spec(Some("{{ order.id }}"), Some("x"), None);
    let err = render_all(&lib, "shipped", &s, json!({"order": {}})).unwrap_err();
    assert!(
        err.message.contains("`order.id` is undefined"),
        "{}",
        err.message
    );
    assert_eq!(err.detail.template.as_deref(), Some("shipped/subject"));
}

#[test]
fn a_syntax_error_reports_line_and_column() {
    let s = spec(None, None, Some("<p>ok</p>\n<p>{{ name }</p>"));
    let lib = library(vec![], Builtins::default());
    let err = render_all(&lib, "broken", &s, json!({"name": "x"})).unwrap_err();
    assert_eq!(err.reason, reasons::TEMPLATE_ERROR);
    assert_eq!(err.detail.template.as_deref(), Some("broken/html"));
    assert_eq!(err.detail.line, Some(2));
    // The stray `}` where `}}` should be.
    assert_eq!(err.detail.column, Some(12));
    assert!(err.message.contains("syntax error"), "{}", err.message);
}

#[test]
fn extends_and_include_resolve_templates_of_the_namespace_and_builtins() {
    let base = template(
        "shop",
        "base",
        spec(
            None,
            Some("== {% block body %}{% endblock %} =="),
            Some("<main>{% block body %}{% endblock %}</main>"),
        ),
    );
    let footer = template("shop", "footer", spec(None, Some("bye {{ name }}"), None));
    let builtins = Builtins::from_files([("partials/sig.html", "<i>{{ name }}</i>")]);
    let lib = library(vec![base, footer], builtins);
    let s = spec(
        Some("x"),
        // `base` from a text part is base/text; `footer/text` names the part explicitly.
        Some(
            "{% extends 'base' %}{% block body %}hi {{ name }}; {% include 'footer/text' %}{% endblock %}",
        ),
        Some(
            "{% extends 'base' %}{% block body %}hi {{ name }}{% include 'partials/sig.html' %}{% endblock %}",
        ),
    );
    let out = render_all(&lib, "welcome", &s, json!({"name": "<Ada>"})).unwrap();
    assert_eq!(out.text.as_deref(), Some("== hi <Ada>; bye <Ada> =="));
    // Everything the html part pulls in is escaped, built-ins included.
    assert_eq!(
        out.html.as_deref(),
        Some("<main>hi &lt;Ada&gt;<i>&lt;Ada&gt;</i></main>")
    );
}

#[test]
fn templates_of_other_namespaces_and_missing_parts_are_not_found() {
    let elsewhere = template("mail", "base", spec(None, Some("x"), None));
    let textonly = template("shop", "textonly", spec(None, Some("x"), None));
    let lib = library(vec![elsewhere, textonly], Builtins::default());
    for (src, missing) in [
        ("{% include 'base' %}", "base"),
        ("{% include 'textonly' %}", "textonly"),
        ("{% extends 'layouts/none.html' %}", "layouts/none.html"),
    ] {
        let s = spec(None, None, Some(src));
        let err = render_all(&lib, "welcome", &s, json!({})).unwrap_err();
        assert_eq!(err.reason, reasons::TEMPLATE_ERROR);
        assert!(err.message.contains(missing), "{}", err.message);
        assert!(
            err.message.contains("layouts/base.html"),
            "the hint explains names: {}",
            err.message
        );
        assert_eq!(err.detail.line, Some(1));
    }
}

#[test]
fn an_error_inside_an_included_template_points_at_that_template() {
    let partial = template("shop", "partial", spec(None, None, Some("ok\n{{ nope }}")));
    let lib = library(vec![partial], Builtins::default());
    let s = spec(None, None, Some("a\nb {% include 'partial' %}"));
    let err = render_all(&lib, "welcome", &s, json!({})).unwrap_err();
    assert_eq!(err.detail.template.as_deref(), Some("partial/html"));
    assert_eq!(err.detail.line, Some(2));
    assert_eq!(err.detail.column, Some(4));
    assert!(
        err.message.contains("included from welcome/html line 2"),
        "{}",
        err.message
    );
}

fn declared(name: &str, required: bool, default: Option<serde_json::Value>) -> TemplateVariable {
    TemplateVariable {
        name: name.to_string(),
        required,
        default,
        description: None,
    }
}

#[test]
fn missing_required_variables_are_named_and_defaults_are_overridden_by_given_values() {
    let mut s = spec(
        Some("{{ greeting }} {{ name }}"),
        Some("via {{ carrier }}"),
        None,
    );
    s.variables = vec![
        declared("name", true, None),
        declared("order_id", true, None),
        declared("greeting", false, Some(json!("Hello"))),
        declared("carrier", false, Some(json!("DHL"))),
    ];
    let lib = library(vec![], Builtins::default());
    let err = render_all(&lib, "shipped", &s, json!({})).unwrap_err();
    assert_eq!(err.reason, reasons::MISSING_VARIABLES);
    assert!(
        err.message.contains("`name`, `order_id`"),
        "{}",
        err.message
    );
    assert_eq!(err.detail.template.as_deref(), Some("shipped"));

    let out = render_all(
        &lib,
        "shipped",
        &s,
        json!({"name": "Ada", "order_id": 1, "carrier": "UPS"}),
    )
    .unwrap();
    assert_eq!(out.subject, "Hello Ada");
    assert_eq!(out.text.as_deref(), Some("via UPS"));
}

#[test]
fn an_endless_loop_fails_fast_at_the_step_limit() {
    let s = spec(
        None,
        Some("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"),
        None,
    );
    let lib = library(vec![], Builtins::default());
    let started = Instant::now();
    let err = render_all(&lib, "loop", &s, json!({})).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(err.reason, reasons::RENDER_LIMIT);
    assert!(err.message.contains("steps"), "{}", err.message);
    assert_eq!(err.detail.template.as_deref(), Some("loop/text"));
}

#[test]
fn huge_output_fails_at_the_output_limit() {
    // Few steps, much output: each iteration writes 100 kB.
    let s = spec(
        None,
        None,
        Some("{% for i in range(1000) %}{{ 'x' * 100000 }}{% endfor %}"),
    );
    let lib = library(vec![], Builtins::default());
    let started = Instant::now();
    let err = render_all(&lib, "big", &s, json!({})).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(err.reason, reasons::RENDER_LIMIT);
    assert!(
        err.message.contains(&engine::MAX_BODY_BYTES.to_string()),
        "{}",
        err.message
    );
    assert_eq!(err.detail.template.as_deref(), Some("big/html"));
}

#[test]
fn a_template_that_includes_itself_fails_at_the_depth_limit() {
    let me = template("shop", "me", spec(None, None, Some("x{% include 'me' %}")));
    let lib = library(vec![me.clone()], Builtins::default());
    let err = render_all(&lib, "me", &me.spec, json!({})).unwrap_err();
    assert_eq!(err.reason, reasons::RENDER_LIMIT);
    assert!(err.message.contains("nest deeper"), "{}", err.message);
}

#[test]
fn parts_not_wanted_are_not_parsed() {
    let s = spec(Some("ok"), Some("{{ broken"), Some("<p>{{ name }}</p>"));
    let lib = library(vec![], Builtins::default());
    let out = render(
        &lib,
        "t",
        &s,
        Some(&vars(json!({"name": "A"}))),
        &[Part::Subject, Part::Html],
    )
    .unwrap();
    assert_eq!(out.subject, "ok");
    assert_eq!(out.text, None);
}

#[test]
fn the_example_template_renders_with_the_shipped_layouts() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let set =
        crate::manifests::ManifestSet::load(&[root.join("examples/templates")], "default").unwrap();
    let m = &set.templates[0];
    let builtins = Builtins::load(&root.join("templates")).unwrap();
    let lib = library(vec![], builtins);
    let preview: BTreeMap<String, serde_json::Value> =
        m.object.spec.preview_variables.clone().unwrap();
    let mut given = preview.clone();
    given.insert("customer_name".into(), json!("Ada <3"));
    let out = render(&lib, &m.name, &m.object.spec, Some(&given), &Part::ALL).unwrap();
    assert_eq!(out.subject, "Your order 10045 is on its way");
    let text = out.text.unwrap();
    assert!(
        text.starts_with("Hello Ada <3,\n\nyour order 10045 has shipped with DHL."),
        "{text}"
    );
    assert!(
        text.ends_with("\n\n-- \nExample Shop, 1 Market Street, Springfield"),
        "{text:?}"
    );
    let html = out.html.unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(
        html.contains("<title>Your order 10045 is on its way</title>"),
        "{html}"
    );
    assert!(html.contains("Hello Ada &lt;3,"), "{html}");
    assert!(
        html.contains(r#"<a href="https:&#x2f;&#x2f;track.example.com&#x2f;10045""#)
            || html.contains("href=\"https://track.example.com/10045\""),
        "{html}"
    );
    assert!(html.contains("@media only screen and (max-width: 620px)"));
}

#[test]
fn a_template_that_fills_only_the_content_block_of_the_built_in_layouts_renders() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let builtins = Builtins::load(&root.join("templates")).unwrap();
    let lib = library(vec![], builtins);
    let s = spec(
        Some("Hi"),
        Some("{% extends \"layouts/base.txt\" %}{% block content %}Hello {{ name }}{% endblock %}"),
        Some(
            "{% extends \"layouts/base.html\" %}{% block content %}<p>Hello {{ name }}</p>{% endblock %}",
        ),
    );
    let out = render(
        &lib,
        "minimal",
        &s,
        Some(&vars(json!({"name": "Grace"}))),
        &Part::ALL,
    )
    .unwrap();
    let text = out.text.unwrap();
    assert_eq!(
        text.trim(),
        "Hello Grace",
        "no footer separator without a footer: {text:?}"
    );
    assert!(out.html.unwrap().contains("<p>Hello Grace</p>"));
}

#[test]
fn filters_that_would_build_huge_strings_fail_naming_the_limit_and_small_ones_work() {
    let lib = library(vec![], Builtins::default());
    let bombs = [
        // Aborted the process (allocation failure) before the bound.
        "{{ 'x' | indent(100000000000) }}",
        // Panicked (capacity overflow) before the bound.
        "{{ 'x' | indent(18446744073709551615) }}",
        "{{ 'x\nx' | indent(width=5000) }}",
        "{{ ('ab' * 1000000) | replace('a', 'aaaaaaaaaa') }}",
        "{{ ('ab' * 100000) | replace('', 'xxxxxxxxxxxxxxxxxxxxxxxx') }}",
    ];
    for source in bombs {
        let s = spec(None, Some(source), None);
        let err = render_all(&lib, "bomb", &s, json!({})).expect_err(source);
        assert!(
            err.message.contains("over the limit") || err.message.contains("limit of"),
            "{source}: {}",
            err.message
        );
    }
    let s = spec(
        None,
        Some("{{ 'a\nb' | indent(2, true) }}|{{ 'hello' | replace('l', 'L') }}"),
        None,
    );
    let out = render_all(&lib, "ok", &s, json!({})).unwrap();
    assert_eq!(out.text.as_deref(), Some("  a\n  b|heLLo"));
}
