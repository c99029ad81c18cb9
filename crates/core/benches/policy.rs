//! Policy decisions per second on in-memory state (issue: ≥ 5 million/s on one core).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use veto_core::{
    Channel, ConsentState, Event, EventId, EventKind, JurisdictionSet, Message, MessageClass,
    PolicySettings, Relationship, RelationshipKind, Scope, Source, SubscriberType, Timestamp,
    Topic, TopicId, TopicKey, decide,
};

fn topic(id: u16, key: &str, group: Option<&str>) -> Topic {
    Topic {
        id: TopicId(id),
        key: TopicKey::parse(key).unwrap(),
        name: key.into(),
        description: String::new(),
        group: group.map(Into::into),
    }
}

/// A realistic contact: several grants and withdrawals, a purchase, a limit.
fn state(jurisdictions: &str) -> ConsentState {
    let mut s = ConsentState::known(
        JurisdictionSet::parse_list(jurisdictions).unwrap(),
        SubscriberType::Individual,
    );
    let t0: Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
    let ev = |id: i64, kind: EventKind, scope: Scope| Event {
        id: EventId(id),
        kind,
        scope,
        channel: Some(Channel::Email),
        source: Source::Form,
        at: Timestamp::from_second(t0.as_second() + id * 86_400).unwrap(),
    };
    s.apply(&ev(1, EventKind::Grant, Scope::Topic(TopicId(1))));
    s.apply(&ev(2, EventKind::Grant, Scope::Topic(TopicId(2))));
    s.apply(&ev(3, EventKind::Withdraw, Scope::Topic(TopicId(3))));
    s.apply(&ev(
        4,
        EventKind::Relationship(Relationship {
            kind: RelationshipKind::Purchase,
            product_group: Some("shoes".into()),
            order_ref: None,
            opt_out_offered: true,
        }),
        Scope::All,
    ));
    s
}

fn bench(c: &mut Criterion) {
    let now: Timestamp = "2026-11-28T12:00:00Z".parse().unwrap();
    let settings = PolicySettings::default();
    let news = topic(1, "news", None);
    let boots = topic(4, "boots", Some("shoes"));
    let hats = topic(3, "hats", Some("hats"));
    let mut g = c.benchmark_group("decide");
    g.throughput(Throughput::Elements(1));
    for (name, st, t) in [
        ("uk_consent_allowed", state("UK"), &news),
        ("uk_eu_soft_opt_in", state("UK|EU"), &boots),
        ("uk_withdrawn_denied", state("UK"), &hats),
        ("all_four_casl_implied", state("UK|EU|US|CA"), &boots),
    ] {
        let msg = Message {
            class: MessageClass::Marketing(t),
            channel: Channel::Email,
        };
        g.bench_function(name, |b| {
            b.iter(|| decide(black_box(&st), black_box(&msg), &settings, now))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
