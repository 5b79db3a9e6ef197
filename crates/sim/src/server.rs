//! The simulated city driven through a running `citypay serve` over HTTP, so that the
//! server's live dashboard shows it: the same people, businesses and day plans as the
//! embedded simulation (drawn from the seed), each action a call of the public API with the
//! caller's own credentials (the operator onboards, merchants use their API keys, residents
//! their sessions).
//!
//! The server keeps its own clock, so days are lived now and back to back, not at their
//! planned hours; the fare run and the settlement are the server operator's (they run after
//! a day closes), so journeys, contributions and tuition are left out here and counted as
//! skipped. Outcomes depend on the server's state (a second run with the same seed answers
//! from the idempotency records), so runs are not replays of each other.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::day::{self, Action, Tender};
use crate::tally::Outcome;
use citypay_directory::NewResident;

use crate::world::{self, BusinessKind, Person, Registration};
use crate::{Progress, SimConfig, SimError, Tally, service, split_residents};

/// The server to drive, and the platform operator who onboards the cities and businesses.
#[derive(Clone, Debug)]
pub struct ServerTarget {
    /// Base URL, e.g. `http://127.0.0.1:8080`.
    pub base: String,
    /// The platform operator's user name.
    pub username: String,
    /// Their password.
    pub password: String,
}

/// What a run against a server did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ServerRun {
    /// The evening before: registrations, cards, first top-ups.
    pub set_up: Tally,
    /// The days.
    pub simulated: Tally,
    /// Planned actions the server mode leaves out, by kind.
    pub skipped: BTreeMap<&'static str, u64>,
}

/// People acting at once: each waits on the server most of the time.
const PEOPLE_IN_FLIGHT: usize = 128;

/// People of a city per seed: seed `s` draws people `(s % 100) * PEOPLE_PER_SEED` onwards.
const PEOPLE_PER_SEED: u64 = 100_000;
/// Businesses of a kind per seed, likewise.
const BUSINESSES_PER_SEED: u64 = 10_000;

/// Business kinds onboarded on a server: those the server mode's actions pay.
const KINDS: [BusinessKind; 3] = [BusinessKind::Shop, BusinessKind::Restaurant, BusinessKind::Hospital];

#[derive(Clone, Debug)]
struct Api {
    client: reqwest::Client,
    base: Arc<str>,
}

/// A server's answer: the body of a success, or the error code of a refusal (4xx).
enum Answer {
    Ok(Value),
    Refused(&'static str),
}

/// Error codes as `&'static str`, as outcomes keep them; the API has a few dozen, and past
/// [`CODES_MAX`] (a server answering nonsense) they are all "refused".
fn intern(code: &str) -> &'static str {
    const CODES_MAX: usize = 256;
    static CODES: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let Ok(mut codes) = CODES.lock() else { return "refused" };
    if let Some(known) = codes.iter().find(|c| **c == code) {
        return known;
    }
    if codes.len() >= CODES_MAX || code.len() > 64 {
        return "refused";
    }
    let leaked: &'static str = Box::leak(code.to_owned().into_boxed_str());
    codes.push(leaked);
    leaked
}

impl Api {
    /// One call. A 503 (the writer busy or restarting) is retried a few times after a pause;
    /// other 5xx answers and transport failures stop the run.
    async fn call(&self, method: reqwest::Method, path: &str, auth: Option<&str>, key: Option<&str>, body: Option<&Value>) -> Result<Answer, SimError> {
        for attempt in 0..5u64 {
            let mut request = self.client.request(method.clone(), format!("{}{path}", self.base));
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            if let Some(key) = key {
                request = request.header("idempotency-key", key);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request.send().await.map_err(|e| service("calling the server", &e))?;
            let status = response.status();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            if status.is_success() {
                return Ok(Answer::Ok(answer));
            }
            if status == reqwest::StatusCode::SERVICE_UNAVAILABLE && attempt < 4 {
                tokio::time::sleep(std::time::Duration::from_millis(200 * (attempt + 1))).await;
                continue;
            }
            if status.is_server_error() {
                return Err(SimError::Service { action: "the server", message: format!("{method} {path}: {status} {answer}") });
            }
            return Ok(Answer::Refused(intern(answer["error"]["code"].as_str().unwrap_or("refused"))));
        }
        Err(SimError::Service { action: "the server", message: format!("{method} {path}: still unavailable") })
    }

    async fn post(&self, path: &str, auth: &str, key: Option<&str>, body: &Value) -> Result<Answer, SimError> {
        self.call(reqwest::Method::POST, path, Some(auth), key, Some(body)).await
    }
}

fn money(fen: i64) -> Value {
    json!({"amount": fen, "currency": "CNY"})
}

fn text(value: &Value, field: &str) -> String {
    value[field].as_str().map(str::to_owned).unwrap_or_default()
}

/// A business as the server knows it: its API key and, for tills, the counter QR.
#[derive(Clone, Debug)]
struct Merchant {
    auth: Arc<str>,
    static_qr: Arc<str>,
}

/// A registered person's wallet, as the simulation knows it.
#[derive(Clone, Debug)]
struct Account {
    auth: String,
    card: String,
    device: Option<(u32, Vec<u8>)>,
    /// What the wallet should hold (tops up before a payment it would not cover).
    balance: i64,
    /// The payment code's time step last shown: a code is good once.
    last_step: u64,
}

/// What every person's task can see.
#[derive(Debug)]
struct World {
    api: Api,
    /// The platform operator's `Bearer` header: it fills the sandbox bank's register.
    operator: String,
    seed: u64,
    cities: Vec<&'static crate::CityPreset>,
    merchants: Vec<HashMap<BusinessKind, Vec<Merchant>>>,
}

impl World {
    fn merchant(&self, person: &Person, kind: BusinessKind, business: usize) -> Option<&Merchant> {
        self.merchants.get(person.city)?.get(&kind)?.get(business)
    }
}

/// Runs `config`'s days against the server: onboards the cities and businesses, registers
/// the residents who already have a wallet, then lives each day's plan through the API.
pub async fn drive(target: &ServerTarget, config: &SimConfig, progress: &dyn Progress) -> Result<ServerRun, SimError> {
    let api = Api { client: reqwest::Client::new(), base: target.base.trim_end_matches('/').into() };
    let session = match api.call(reqwest::Method::POST, "/v1/operator-sessions", None, None, Some(&json!({"username": target.username, "password": target.password}))).await? {
        Answer::Ok(session) => format!("Bearer {}", text(&session, "token")),
        Answer::Refused(code) => return Err(SimError::Service { action: "signing in as the platform operator", message: code.into() }),
    };
    let residents_per_city = split_residents(&config.cities, config.residents);
    let people = people(config)?;
    let businesses_from = (config.seed % 100) * BUSINESSES_PER_SEED;
    let mut merchants = Vec::new();
    for (city, (preset, residents)) in config.cities.iter().zip(&residents_per_city).enumerate() {
        // Onboarded before, by this run or another: fine.
        api.post("/v1/cities", &session, Some(&format!("sim-city-{}", preset.code)), &json!({"code": preset.code, "name": preset.name})).await?;
        let fund = json!({"amount": money(crate::fund_deposit(*residents, config.days)),
            "reference": format!("sim-{}-fund-{}", config.seed, preset.code)});
        api.post(&format!("/v1/insurance-funds/{}/deposits", preset.code), &session, None, &fund).await?;
        let plan: Vec<(BusinessKind, u64)> = world::businesses(*residents).into_iter().filter(|(kind, _)| KINDS.contains(kind)).collect();
        progress.start(&format!("{}: businesses", preset.name), plan.iter().map(|(_, n)| n).sum());
        let mut by_kind = HashMap::new();
        for (kind, count) in plan {
            let mut list = Vec::new();
            for index in 0..count {
                list.push(onboard(&api, &session, preset, city, kind, businesses_from + index).await?);
                progress.advance(1);
            }
            by_kind.insert(kind, list);
        }
        progress.finish();
        merchants.push(by_kind);
    }
    let world = Arc::new(World { api, operator: session.clone(), seed: config.seed, cities: config.cities.clone(), merchants });
    let shape = day::Shape {
        seed: config.seed,
        cities: &config.cities,
        businesses: world.merchants.iter().map(|kinds| kinds.iter().map(|(kind, list)| (*kind, list.len())).collect()).collect(),
        // Journeys are drawn (and counted as skipped) as on a city with one bus line.
        lines: config.cities.iter().map(|_| day::Lines { buses: 1, metro: Vec::new() }).collect(),
    };
    let mut run = ServerRun::default();
    let mut accounts: Vec<Option<Account>> = people.iter().map(|_| None).collect();

    let before: Vec<(usize, Vec<Action>)> =
        people.iter().enumerate().filter(|(_, p)| p.registration == Registration::Before).map(|(i, _)| (i, vec![Action::Register])).collect();
    progress.start("registering residents", u64::try_from(before.len()).unwrap_or(0));
    run.set_up = live_all(&world, &people, &mut accounts, before, 0, progress, &mut run.skipped).await?;
    progress.finish();
    for day_number in 1..=config.days {
        let plan: Vec<(usize, Vec<Action>)> =
            day::plan(&shape, &people, day_number).into_iter().map(|(index, planned)| (index, planned.into_iter().map(|p| p.action).collect())).collect();
        progress.start(&format!("day {day_number}"), u64::try_from(plan.len()).unwrap_or(0));
        let tally = live_all(&world, &people, &mut accounts, plan, day_number, progress, &mut run.skipped).await?;
        progress.finish();
        run.simulated.merge(&tally);
    }
    Ok(run)
}

/// Everyone a run of `config` against a server draws, city by city. Each seed gets its own
/// people (ID numbers, mobiles), so a server can hold several simulated runs.
fn people(config: &SimConfig) -> Result<Vec<Person>, SimError> {
    let residents_per_city = split_residents(&config.cities, config.residents);
    if residents_per_city.iter().any(|n| *n > PEOPLE_PER_SEED) {
        return Err(SimError::Service { action: "planning the run", message: format!("at most {PEOPLE_PER_SEED} residents per city on a server") });
    }
    let people_from = (config.seed % 100) * PEOPLE_PER_SEED;
    let mut people = Vec::new();
    for (city, (preset, count)) in config.cities.iter().zip(&residents_per_city).enumerate() {
        people.extend((people_from..people_from + *count).map(|index| Person::draw(config.seed, city, preset, index, config.days)));
    }
    Ok(people)
}

/// The personal data a run of `config` against a server sends: each person's registration
/// (name, mobile, ID number, password; bills name the ID number of those who never register
/// too) and the numbers of the cards they would link. A test checks the server's log for it.
pub fn personal_data(config: &SimConfig) -> Result<Vec<(NewResident, Vec<String>)>, SimError> {
    Ok(people(config)?
        .iter()
        .map(|person| {
            let cards = (0..person.banks()).map(|bank| person.card_number(bank)).collect();
            (person.new_resident(config.cities[person.city], config.seed), cards)
        })
        .collect())
}

/// Onboards the `index`-th business of a kind and reads its counter QR. Onboarding is not
/// replayable (its answer shows the API key once), so a seed's city can be onboarded once.
async fn onboard(api: &Api, session: &str, preset: &crate::CityPreset, city: usize, kind: BusinessKind, index: u64) -> Result<Merchant, SimError> {
    let new = world::new_merchant(preset, city, kind, index);
    let body = json!({"city": new.city, "name": new.name, "uscc": new.uscc, "mcc": new.mcc, "category": new.category.code(),
        "settlement_account": new.settlement_account});
    // Not replayable: the answer shows the merchant's API key once.
    let onboarded = match api.post("/v1/merchants", session, None, &body).await? {
        Answer::Ok(onboarded) => onboarded,
        Answer::Refused(code) => {
            let message = format!("{code} for {}: the server already holds this seed's city (seeds that differ by a multiple of 100 share one); use another --seed", new.uscc);
            return Err(SimError::Service { action: "onboarding a merchant", message });
        }
    };
    let auth: Arc<str> = format!("ApiKey {}:{}", text(&onboarded, "api_key_id"), text(&onboarded, "api_key_secret")).into();
    let static_qr = match api.call(reqwest::Method::GET, "/v1/merchant/qr", Some(&auth), None, None).await? {
        Answer::Ok(qr) => text(&qr, "qr_payload").into(),
        Answer::Refused(_) => "".into(),
    };
    Ok(Merchant { auth, static_qr })
}

/// Lives each person's actions (in order; people at once), and tallies the outcomes.
async fn live_all(
    world: &Arc<World>,
    people: &[Person],
    accounts: &mut [Option<Account>],
    jobs: Vec<(usize, Vec<Action>)>,
    day: u32,
    progress: &dyn Progress,
    skipped: &mut BTreeMap<&'static str, u64>,
) -> Result<Tally, SimError> {
    let mut tally = Tally::default();
    let mut jobs = jobs.into_iter();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        while tasks.len() < PEOPLE_IN_FLIGHT {
            let Some((index, actions)) = jobs.next() else { break };
            let (world, person, account) = (world.clone(), people[index].clone(), accounts[index].take());
            tasks.spawn(async move {
                let mut account = account;
                let mut outcomes = Vec::new();
                let mut left_out = Vec::new();
                for action in actions {
                    match act(&world, &person, &mut account, action, day, &mut outcomes).await {
                        Ok(Some(kind)) => left_out.push(kind),
                        Ok(None) => {}
                        Err(e) => outcomes.push(Err(e)),
                    }
                }
                (index, account, outcomes, left_out)
            });
        }
        let Some(joined) = tasks.join_next().await else { return Ok(tally) };
        let (index, account, outcomes, left_out) = joined.map_err(|e| SimError::Task(e.to_string()))?;
        let city = world.cities[people[index].city].name;
        for outcome in outcomes {
            tally.add(city, outcome?);
        }
        for kind in left_out {
            *skipped.entry(kind).or_default() += 1;
        }
        accounts[index] = account;
        progress.advance(1);
    }
}

/// Does one action; answers the kind of a planned action the server mode leaves out.
async fn act(
    world: &World,
    person: &Person,
    account: &mut Option<Account>,
    action: Action,
    day: u32,
    outcomes: &mut Vec<Result<Outcome, SimError>>,
) -> Result<Option<&'static str>, SimError> {
    let out_no = |number: u32| format!("s{}d{day}c{}p{}n{number}", world.seed, person.city, person.index);
    match action {
        Action::Register => {
            *account = register(world, person, outcomes).await?;
            Ok(None)
        }
        Action::Purchase { kind: BusinessKind::Hospital, business, amount, tender, number } => {
            let Some(hospital) = world.merchant(person, BusinessKind::Hospital, business) else { return Ok(Some("hospital visit")) };
            hospital_visit(world, person, account.as_mut(), hospital, amount, tender, &out_no(number), outcomes).await?;
            Ok(None)
        }
        Action::Purchase { kind, business, amount, tender, number } => {
            let Some(merchant) = world.merchant(person, kind, business) else { return Ok(Some("purchase")) };
            purchase(world, account.as_mut(), merchant, kind, amount, tender, &out_no(number), outcomes).await?;
            Ok(None)
        }
        Action::Refund { kind, business, amount, number } => {
            let Some(merchant) = world.merchant(person, kind, business) else { return Ok(Some("refund")) };
            let body = json!({"out_request_no": "r1", "amount": money(amount)});
            match world.api.post(&format!("/v1/trades/{}/refunds", out_no(number)), &merchant.auth, None, &body).await? {
                Answer::Ok(_) => {
                    if let Some(account) = account.as_mut() {
                        account.balance += amount;
                    }
                    outcomes.push(Ok(Outcome::Refund { amount }));
                }
                Answer::Refused(code) => outcomes.push(Ok(Outcome::Refused { what: "refund", code })),
            }
            Ok(None)
        }
        Action::Journey { .. } => Ok(Some("journey")),
        Action::Contribute { .. } => Ok(Some("contribution")),
        Action::PayTuition { .. } => Ok(Some("tuition")),
        Action::Travel { .. } => Ok(Some("purchase in another city")),
        Action::SendMoney { .. } => Ok(Some("money sent to family")),
    }
}

/// Registers, signs in, links the card, enrols a phone for payment codes, tops up.
async fn register(world: &World, person: &Person, outcomes: &mut Vec<Result<Outcome, SimError>>) -> Result<Option<Account>, SimError> {
    let preset = world.cities[person.city];
    let new = person.new_resident(preset, world.seed);
    let key = |what: &str| format!("sim-{}-{what}-{}-{}", world.seed, preset.code, person.index);
    let body = json!({"city": new.city, "name": new.name, "mobile": new.mobile, "id_number": new.id_number, "password": new.password});
    let api = &world.api;
    if let Answer::Refused(code) = api.call(reqwest::Method::POST, "/v1/residents", None, Some(&key("resident")), Some(&body)).await? {
        outcomes.push(Ok(Outcome::Refused { what: "register", code }));
        return Ok(None);
    }
    outcomes.push(Ok(Outcome::Registered));
    let sign_in = json!({"mobile": new.mobile, "password": new.password});
    let auth = match api.call(reqwest::Method::POST, "/v1/sessions", None, None, Some(&sign_in)).await? {
        Answer::Ok(session) => format!("Bearer {}", text(&session, "token")),
        Answer::Refused(code) => {
            outcomes.push(Ok(Outcome::Refused { what: "sign in", code }));
            return Ok(None);
        }
    };
    // One card per bank their class takes, each issued to them by the sandbox bank first.
    let mut card = String::new();
    for bank in (0..person.banks()).rev() {
        let number = person.card_number(bank);
        let holder = json!({"card_number": number, "name": new.name, "id_number": new.id_number});
        let issued = api.post("/v1/sandbox-bank/card-holders", &world.operator, Some(&key(&format!("issue-{bank}"))), &holder).await?;
        let linked = match issued {
            Answer::Ok(_) => api.post("/v1/wallet/cards", &auth, Some(&key(&format!("card-{bank}"))), &json!({"card_number": number})).await?,
            refused => refused,
        };
        match linked {
            Answer::Ok(linked) => card = text(&linked, "card_id"),
            Answer::Refused(code) => {
                outcomes.push(Ok(Outcome::Refused { what: "link card", code }));
                return Ok(None);
            }
        }
    }
    let device = if person.shows_code {
        match api.post("/v1/payment-devices", &auth, Some(&key("device")), &json!({})).await? {
            Answer::Ok(device) => {
                let hex = text(&device, "secret");
                let mut secret = vec![0; hex.len() / 2];
                let secret = citypay_directory::hex::decode_into(&hex, &mut secret).then_some(secret);
                device["device"].as_u64().and_then(|d| u32::try_from(d).ok()).zip(secret)
            }
            Answer::Refused(code) => {
                outcomes.push(Ok(Outcome::Refused { what: "enrol device", code }));
                None
            }
        }
    } else {
        None
    };
    let mut account = Account { auth, card, device, balance: 0, last_step: 0 };
    let first = day::first_top_up(world.seed, preset, person.index);
    outcomes.push(top_up(world, &mut account, first, &key("first-top-up")).await);
    Ok(Some(account))
}

async fn top_up(world: &World, account: &mut Account, amount: i64, key: &str) -> Result<Outcome, SimError> {
    let body = json!({"card_id": account.card, "amount": money(amount)});
    Ok(match world.api.post("/v1/wallet/top-ups", &account.auth, Some(key), &body).await? {
        Answer::Ok(movement) => {
            account.balance = movement["balance"]["amount"].as_i64().unwrap_or(account.balance + amount);
            Outcome::TopUp { amount }
        }
        Answer::Refused(code) => Outcome::Refused { what: "top up", code },
    })
}

/// Tops the wallet up before paying `amount` when it holds less, as the embedded run does.
async fn top_up_for(world: &World, account: &mut Account, amount: i64, key: &str, outcomes: &mut Vec<Result<Outcome, SimError>>) {
    if let Some(top) = day::top_up_needed(account.balance, amount) {
        outcomes.push(top_up(world, account, top, key).await);
    }
}

/// A purchase at a till: by phone as planned (a payment code whose 30-second step was
/// already used is not shown again: the person scans the till's QR instead), else cash.
#[allow(clippy::too_many_arguments)]
async fn purchase(
    world: &World,
    account: Option<&mut Account>,
    merchant: &Merchant,
    kind: BusinessKind,
    amount: i64,
    tender: Tender,
    out_trade_no: &str,
    outcomes: &mut Vec<Result<Outcome, SimError>>,
) -> Result<(), SimError> {
    let category = day::category_code(kind);
    let subject = day::subject(kind);
    let api = &world.api;
    let mut paid = false;
    if let (Some(account), false) = (account, tender == Tender::Cash) {
        top_up_for(world, account, amount, &format!("sim-top-up-{out_trade_no}"), outcomes).await;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let step = now / 30;
        let tender = match (&account.device, tender) {
            (Some(_), Tender::Code) if account.last_step == step => Tender::DynamicQr,
            (None, Tender::Code) => Tender::DynamicQr,
            (_, tender) => tender,
        };
        let pay_key = format!("sim-pay-{out_trade_no}");
        let answer = match (tender, &account.device) {
            (Tender::Code, Some((device, secret))) => {
                account.last_step = step;
                let code = citypay_codes::payment_code::PaymentCode::generate(*device, secret, now);
                let body = json!({"out_trade_no": out_trade_no, "amount": money(amount), "subject": subject, "auth_code": code});
                api.post("/v1/trades/pay", &merchant.auth, None, &body).await?
            }
            (Tender::StaticQr, _) => {
                let body = json!({"payload": &*merchant.static_qr, "amount": money(amount)});
                api.post("/v1/payments/qr", &account.auth, Some(&pay_key), &body).await?
            }
            _ => match api.post("/v1/trades", &merchant.auth, None, &json!({"out_trade_no": out_trade_no, "amount": money(amount), "subject": subject})).await? {
                Answer::Ok(created) => api.post("/v1/payments/qr", &account.auth, Some(&pay_key), &json!({"payload": text(&created, "qr_payload")})).await?,
                refused => refused,
            },
        };
        match answer {
            Answer::Ok(_) => {
                account.balance -= amount;
                outcomes.push(Ok(Outcome::Payment { category, method: day::method_code(tender), amount }));
                paid = true;
            }
            Answer::Refused(code) => outcomes.push(Ok(Outcome::Refused { what: "pay", code })),
        }
    }
    // Whoever cannot or will not pay by phone pays cash: the till always takes it.
    if !paid {
        let body = json!({"out_trade_no": format!("{out_trade_no}x"), "amount": money(amount), "subject": subject});
        match api.post("/v1/cash-sales", &merchant.auth, None, &body).await? {
            Answer::Ok(_) => outcomes.push(Ok(Outcome::Payment { category, method: "cash", amount })),
            Answer::Refused(code) => outcomes.push(Ok(Outcome::Refused { what: "cash sale", code })),
        }
    }
    Ok(())
}

/// A hospital visit, as in the embedded run: billed by ID number; half the medicine from the
/// insurance fund when paid from the phone, all of it in cash at the counter.
#[allow(clippy::too_many_arguments)]
async fn hospital_visit(
    world: &World,
    person: &Person,
    account: Option<&mut Account>,
    hospital: &Merchant,
    amount: i64,
    tender: Tender,
    out_bill_no: &str,
    outcomes: &mut Vec<Result<Outcome, SimError>>,
) -> Result<(), SimError> {
    let preset = world.cities[person.city];
    let by_phone = tender != Tender::Cash && account.is_some();
    let (registration, medicine, insured) = day::visit_parts(amount, by_phone);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let bill = json!({"out_bill_no": out_bill_no, "payer_kind": "id_number", "payer": world::resident_id_number(preset.code, person.index),
        "title": "门诊", "items": [{"name": "挂号费", "amount": money(registration)}, {"name": "药费", "amount": money(medicine)}],
        "pick_items": false, "insured": money(insured), "due_at": now + 30 * 86_400, "late_allowed": true});
    let api = &world.api;
    let bill_no = match api.post("/v1/bills", &hospital.auth, None, &bill).await? {
        Answer::Ok(bill) => text(&bill, "bill_no"),
        Answer::Refused(code) => {
            outcomes.push(Ok(Outcome::Refused { what: "issue a bill", code }));
            return Ok(());
        }
    };
    let category = citypay_directory::Category::Hospital.code();
    let own_part = amount - insured;
    let mut paid = false;
    if let (Some(account), true) = (account, by_phone) {
        top_up_for(world, account, own_part, &format!("sim-top-up-{out_bill_no}"), outcomes).await;
        match api.post(&format!("/v1/my/bills/{bill_no}/payments"), &account.auth, Some(&format!("sim-bill-{out_bill_no}")), &json!({})).await? {
            Answer::Ok(_) => {
                account.balance -= own_part;
                outcomes.push(Ok(Outcome::BillPaid { category, method: "bill", amount }));
                paid = true;
            }
            Answer::Refused(code) => outcomes.push(Ok(Outcome::Refused { what: "pay a bill", code })),
        }
    }
    if !paid {
        let key = format!("sim-cash-{out_bill_no}");
        match api.post(&format!("/v1/bills/{out_bill_no}/cash-payments"), &hospital.auth, Some(&key), &json!({"amount": money(own_part)})).await? {
            Answer::Ok(_) => outcomes.push(Ok(Outcome::BillPaid { category, method: "cash", amount })),
            Answer::Refused(code) => outcomes.push(Ok(Outcome::Refused { what: "pay a bill in cash", code })),
        }
    }
    Ok(())
}
