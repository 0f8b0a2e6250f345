//! Property tests of manifest reading (`evaluate`, `report`): any text — valid YAML or not,
//! our kinds or others, mutated examples — gives objects or a clear error, never a panic or a
//! hang; and whatever is read can be evaluated and rendered.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use proptest::prelude::*;

use mailsec_operator::cli::OutputFormat;
use mailsec_operator::cli::evaluate::render;
use mailsec_operator::engine::Policy;
use mailsec_operator::manifests::Manifests;

use mailsec_operator::fixtures::example_texts as examples;

/// Reads `text`, then evaluates and renders whatever was read in every format; returns whether
/// it was accepted. Fails the property on a panic (proptest reports it) or on a slow input.
fn read_and_render(text: &str) -> bool {
    let started = Instant::now();
    let mut m = Manifests::default();
    let accepted = m.add_text("fuzz.yaml", text).is_ok();
    let at = DateTime::<Utc>::from_timestamp(1_798_000_000, 0).unwrap_or_default();
    for format in [OutputFormat::Table, OutputFormat::Json, OutputFormat::Yaml] {
        let _ = render(&m, &Policy::default(), at, format);
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?} on {} bytes",
        started.elapsed(),
        text.len()
    );
    accepted
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,400}") {
        read_and_render(&text);
    }

    #[test]
    fn yaml_shaped_text_never_panics(text in "(apiVersion: mailsec\\.io/v1alpha1\nkind: (Tenant|Subscription)\n)?(metadata: \\{name: [a-z]{1,5}\\}\n)?(spec: \\{[a-zA-Z]{0,10}: [-0-9a-z\\[\\]{}:,\" ]{0,30}\\}\n)?(---\n)?") {
        read_and_render(&text);
    }

    #[test]
    fn mutated_examples_never_panic(which in any::<prop::sample::Index>(), cut in any::<prop::sample::Index>(), insert in "[-:{}\\[\\], a-z0-9\"'#\n]{0,12}") {
        let all = examples();
        let text = &all[which.index(all.len())];
        let mut at = cut.index(text.len().max(1));
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        let mutated = format!("{}{}{}", &text[..at], insert, &text[at..]);
        read_and_render(&mutated);
    }
}

#[test]
fn every_example_is_accepted() {
    for text in examples() {
        assert!(read_and_render(&text), "an example was refused");
    }
}
