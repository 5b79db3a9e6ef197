"""Schemathesis hooks for the API fuzzing test (`crates/cli/tests/api_fuzz.rs`).

They sign every call in as the caller its operation names (a resident, a merchant, a transit
operator, a platform or city operator, a validator signing each call with its Ed25519 device
key), and they make the fuzzing reach the business: every other case that schemathesis
generates as valid gets real values where the API needs real things (ids of what exists, a
fresh payment code, a trade still open, a bill to pay, a fresh ID number). What each call
answered goes to $CITYPAY_FUZZ_LOG, one JSON line per call, for the test to check that every
operation answered 2xx at least once.

The city comes from the test: $CITYPAY_BASE (the server), $CITYPAY_DB (its SQLite file, to date
a validator's installation days back), $OPERATOR_PASSWORD (of the platform operator `root`
and the city operator `hz`). Everything else is made here, through the API, at load time.
"""

import datetime
import hashlib
import hmac
import itertools
import json
import os
import sqlite3
import struct
import time
import uuid

import requests
import schemathesis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

BASE = os.environ["CITYPAY_BASE"]
DB = os.environ["CITYPAY_DB"]
OPERATOR_PASSWORD = os.environ["OPERATOR_PASSWORD"]
LOG = open(os.environ["CITYPAY_FUZZ_LOG"], "a", encoding="utf-8")
HERE = os.path.dirname(os.path.abspath(__file__))
APP_PUBLIC_KEY = open(os.path.join(HERE, "../../../gateway/tests/test-key.pub.pem"), encoding="ascii").read()
PASSWORD = "correct horse"
ALICE_ID = "11010519491231002X"
MOTHER_ID = "330106195203150045"
BEIJING = datetime.timezone(datetime.timedelta(hours=8))
serial = itertools.count(1)
session = requests.Session()


# ---- Valid identifiers, fresh each time --------------------------------------------------

def id_number(n):
    """A valid PRC resident ID number (GB 11643), Beijing Chaoyang, the n-th (born 1960-1999)."""
    born = datetime.date(1960, 1, 1) + datetime.timedelta(days=n // 1000 % 14000)
    body = "110105" + born.strftime("%Y%m%d") + "%03d" % (n % 1000)
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, weights)) % 11]


def uscc(n):
    """A valid Unified Social Credit Code (GB 32100 over a GB 11714 organisation code)."""
    organisation = "M%07d" % n
    value = lambda c: int(c) if c.isdigit() else ord(c) - ord("A") + 10
    check = 11 - sum(value(c) * w for c, w in zip(organisation, [3, 7, 9, 10, 5, 8, 4, 2])) % 11
    organisation += "0123456789X0"[check]
    first17 = "91330100" + organisation
    alphabet = "0123456789ABCDEFGHJKLMNPQRTUWXY"
    weights = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28]
    total = sum(alphabet.index(c) * w for c, w in zip(first17, weights))
    return first17 + alphabet[(31 - total % 31) % 31]


def card_number(n):
    """A Luhn-valid Visa-range card number."""
    body = "411111%09d" % n
    digits = [int(d) for d in body]
    total = sum(digits[i] if (len(digits) - i) % 2 == 0 else sum(divmod(2 * digits[i], 10)) for i in range(len(digits)))
    return body + str((10 - total % 10) % 10)


def fresh(prefix):
    return "%s_%d_%s" % (prefix, next(serial), uuid.uuid4().hex[:8])


def cny(fen):
    return {"amount": fen, "currency": "CNY"}


def today(days=0):
    return (datetime.datetime.now(BEIJING).date() + datetime.timedelta(days=days)).isoformat()


# ---- The API, as the hooks call it themselves --------------------------------------------

def call(method, path, auth=None, body=None, key=None, expect=(200, 201, 204)):
    headers = {}
    if auth:
        headers["authorization"] = auth
    if key:
        headers["idempotency-key"] = key
    answer = session.request(method, BASE + path, headers=headers, json=body, timeout=30)
    if answer.status_code not in expect:
        raise RuntimeError("%s %s answered %d: %s" % (method, path, answer.status_code, answer.text))
    return answer.json() if answer.content and answer.headers.get("content-type", "").startswith("application/json") else None


class Resident:
    def __init__(self, name, id_number, mobile):
        self.name, self.id_number, self.mobile, self.password = name, id_number, mobile, PASSWORD
        body = {"city": 330100, "name": name, "mobile": mobile, "id_number": id_number, "password": PASSWORD}
        call("POST", "/v1/residents", body=body, key=fresh("reg"))
        self.ticket = None
        self.token, self.session_id = self.sign_in()

    def sign_in(self):
        body = {"mobile": self.mobile, "password": self.password, "client_ticket": self.ticket}
        signed = call("POST", "/v1/sessions", body=body)
        self.ticket = signed["client_ticket"]
        return "Bearer " + signed["token"], signed["session_id"]


def operator(username):
    signed = call("POST", "/v1/operator-sessions", body={"username": username, "password": OPERATOR_PASSWORD})
    return "Bearer " + signed["token"], signed["client_ticket"]


def merchant(category, mcc):
    body = {"city": 330100, "name": "Merchant " + category, "uscc": uscc(next(serial)), "mcc": mcc,
            "category": category, "settlement_account": "6222020200112233446"}
    made = call("POST", "/v1/merchants", auth=PLATFORM, body=body)
    return made["merchant_id"], "ApiKey %s:%s" % (made["api_key_id"], made["api_key_secret"])


def public_hex(private):
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def issue_and_link(resident, *, top_up=0):
    card = card_number(next(serial))
    body = {"card_number": card, "name": resident.name, "id_number": resident.id_number}
    call("POST", "/v1/sandbox-bank/card-holders", auth=PLATFORM, body=body, key=fresh("issue"))
    linked = call("POST", "/v1/wallet/cards", auth=resident.token, body={"card_number": card}, key=fresh("card"))
    if top_up:
        call("POST", "/v1/wallet/top-ups", auth=resident.token, body={"card_id": linked["card_id"], "amount": cny(top_up)}, key=fresh("top"))
    return linked["card_id"]


def trade(amount=1000):
    no = fresh("T")
    made = call("POST", "/v1/trades", auth=SHOP, body={"out_trade_no": no, "amount": cny(amount), "subject": "tea"})
    return no, made


def paid_trade(amount=1000):
    no, made = trade(amount)
    call("POST", "/v1/payments/qr", auth=ALICE.token, body={"payload": made["qr_payload"]}, key=fresh("pay"))
    return no


def bill(insured=0, amount=5000):
    no = fresh("B")
    body = {"out_bill_no": no, "payer_kind": "id_number", "payer": ALICE_ID, "title": "visit",
            "items": [{"name": "consultation", "amount": cny(amount)}], "insured": cny(insured),
            "due_at": int(time.time()) + 30 * 86400}
    made = call("POST", "/v1/bills", auth=HOSPITAL, body=body)
    return no, made["bill_no"]


def device():
    enrolled = call("POST", "/v1/payment-devices", auth=ALICE.token)
    return enrolled["device"], bytes.fromhex(enrolled["secret"])


def payment_code(device_id, secret):
    """The 18-digit code: 88, the device, an 8-digit TOTP (HMAC-SHA-256, 30 s steps)."""
    mac = hmac.new(secret, struct.pack(">Q", int(time.time()) // 30), hashlib.sha256).digest()
    offset = mac[-1] & 0x0F
    otp = (struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF) % 10**8
    return "88%08d%08d" % (device_id, otp)


class Validator:
    """A validator signs each call with its key, as the document's `validator` scheme says:
    `citypay-validator/v1\\n<METHOD> <path>\\n<unix seconds>\\n<body>`."""

    def __init__(self, private, validator_id):
        self.private, self.id = private, validator_id

    def __call__(self, request):
        now = str(int(time.time()))
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        path = request.path_url.split("?")[0]
        signature = self.private.sign(("citypay-validator/v1\n%s %s\n%s\n" % (request.method, path, now)).encode() + body).hex()
        request.headers["Authorization"] = "Validator %d:%s:%s" % (self.id, now, signature)
        return request


# ---- The city the fuzzing starts from ------------------------------------------------------

TICKETS = {}
PLATFORM, TICKETS["root"] = operator("root")
CITY_OPERATOR, _ = operator("hz")
SHOP_ID, SHOP = merchant("restaurant", "5812")
SHOP2_ID, SHOP2 = merchant("restaurant", "5812")
HOSPITAL_ID, HOSPITAL = merchant("hospital", "8062")
SCHOOL_ID, SCHOOL = merchant("school", "8211")
BUREAU_ID, BUREAU = merchant("social_security", "9311")
TRANSIT_ID, TRANSIT = merchant("transit", "4111")
ALICE = Resident("Li Lei", ALICE_ID, "13800138000")
MOTHER = Resident("Li Mei", MOTHER_ID, "13700137000")
KEEPER = Resident("Wang Fang", id_number(1), "13600136000")  # whose sessions, password and freeze are fuzzed
call("POST", "/v1/in-person-verifications", auth=PLATFORM, body={"id_number": ALICE_ID, "name": "Li Lei"}, key=fresh("seen"))
ALICE_CARD = issue_and_link(ALICE, top_up=5_000_000)
call("POST", "/v1/insurance-funds/330100/deposits", auth=PLATFORM, body={"amount": cny(100_000_000), "reference": "NHSA-1"})
# Alice asks to pay her mother's bills; the fuzzing approves and declines that request.
call("POST", "/v1/my/payer-links", auth=ALICE.token, body={"payer_kind": "id_number", "payer": MOTHER_ID, "label": "mother"}, key=fresh("link"))
REQUESTER = call("GET", "/v1/my/payer-link-requests", auth=MOTHER.token)["requests"][0]["requester"]
# Years of contribution windows: each contribution takes a year of its own (one a person and year).
NOW = int(time.time())
YEARS = itertools.count(2030)
CITY_CODES = iter([320100, 320200, 320300, 320400, 320500, 320600, 320700, 320800, 320900, 321000, 321100, 321200, 321300,
                   330200, 330300, 330400, 330500, 330600, 330700, 330800, 330900, 331000, 331100, 340100, 340200, 340300,
                   350100, 350200, 350300, 350400, 350500, 350600, 350700, 350800, 350900, 360100, 360200, 360300, 360400,
                   370100, 370200, 370300, 370400, 370500, 370600, 370700, 370800, 370900, 371000, 410100, 410200, 410300])
# A paid and partly refunded trade, a paid bill and its receipt, a gateway app.
PAID_TRADE = paid_trade(5000)
call("POST", "/v1/trades/%s/refunds" % PAID_TRADE, auth=SHOP, body={"out_request_no": "R1", "amount": cny(100)})
SETUP_BILL_NO, SETUP_BILL = bill()
RECEIPT = call("POST", "/v1/my/bills/%s/payments" % SETUP_BILL, auth=ALICE.token, body={}, key=fresh("pay"))["receipt_no"]
APP_ID = call("POST", "/v1/gateway/apps", auth=SHOP, body={"public_key": APP_PUBLIC_KEY})["app_id"]
# The shop's till: a cashier, a manager and a spare credential the fuzzer may change.


def cashier(role):
    body = {"name": "Cashier " + role, "role": role, "refund_limit": cny(100_000), "password": PASSWORD}
    return call("POST", "/v1/cashiers", auth=SHOP, body=body)["cashier_number"]


def till_token(number):
    # Not through `session`: the cookie is the token, sent here as a bearer token instead.
    answer = requests.post(BASE + "/v1/till/sessions", json={"cashier_number": str(number), "password": PASSWORD}, timeout=30)
    answer.raise_for_status()
    return "Bearer " + answer.headers["set-cookie"].split(";")[0].split("=", 1)[1]


CASHIER, MANAGER, SPARE_CASHIER = cashier("cashier"), cashier("manager"), cashier("cashier")
CASHIER_TOKEN, MANAGER_TOKEN = till_token(CASHIER), till_token(MANAGER)
# A validator installed three days ago, Alice's ride credential, her ride two days ago, fared.
DEVICE = Ed25519PrivateKey.generate()
registration = {"route_id": "824", "stop_id": "B_XIZHAN", "device_key": public_hex(DEVICE)}
VALIDATOR = Validator(DEVICE, call("POST", "/v1/validators", auth=TRANSIT, body=registration, key=fresh("v"))["validator_id"])
db = sqlite3.connect(DB, timeout=10)
db.execute("UPDATE validators SET created_at = created_at - 259200")
db.commit()
db.close()
credential = {"rider_key": public_hex(Ed25519PrivateKey.generate())}
ACCOUNT_REF = call("POST", "/v1/ride-credentials", auth=ALICE.token, body=credential, key=fresh("ride"))["account_ref"]
RIDE_DAY = today(-2)
ride_noon = int(datetime.datetime.fromisoformat(RIDE_DAY + "T12:00:00+08:00").timestamp())
SEQUENCES = itertools.count(1)
tap = {"sequence": next(SEQUENCES), "account_ref": ACCOUNT_REF, "direction": "in", "time": ride_noon, "code_hash": "11" * 32}
session.post(BASE + "/v1/validators/%d/taps" % VALIDATOR.id, json={"taps": [tap]}, auth=VALIDATOR, timeout=30).raise_for_status()
call("POST", "/v1/transit/fare-runs", auth=PLATFORM, body={"date": RIDE_DAY}, key=fresh("run"))


# ---- Who calls each operation, and the real values of a valid case ------------------------

def keeper_password_change(case):
    case.body = {"current_password": KEEPER.password, "new_password": fresh("pw"), "client_ticket": KEEPER.ticket}


def keeper_session(case):
    _, session_id = KEEPER.sign_in()
    case.path_parameters["session_id"] = session_id


def revoke_key(case):
    case.path_parameters["key_id"] = call("POST", "/v1/api-keys", auth=SHOP)["api_key_id"]


def revoke_device(case):
    case.path_parameters["device"] = device()[0]


def pay_by_code(case):
    device_id, secret = device()
    case.body = {"out_trade_no": fresh("C"), "amount": cny(300), "subject": "noodles", "auth_code": payment_code(device_id, secret)}


def pay_qr(case):
    case.body = {"payload": trade(800)[1]["qr_payload"]}


def refund(case):
    case.path_parameters["out_trade_no"] = paid_trade(2000)
    case.body = {"out_request_no": fresh("R"), "amount": cny(500)}


def open_trade(case):
    case.path_parameters["out_trade_no"] = trade()[0]


def new_trade(case):
    case.body = {"out_trade_no": fresh("T"), "amount": cny(1200), "subject": "tea", "timeout_s": 600}


def cash_bill(case):
    case.path_parameters["out_bill_no"] = bill()[0]
    case.body = {"amount": cny(5000)}


def pay_bill(case):
    case.path_parameters["bill_no"] = bill()[1]
    case.body = {}


def consent(case):
    case.path_parameters["bill_no"] = bill(insured=2000)[1]


def claim(case):
    out_bill_no, bill_no = bill(insured=2000)
    call("POST", "/v1/bills/%s/cash-payments" % out_bill_no, auth=HOSPITAL, body={"amount": cny(5000)}, key=fresh("cash"))
    case.path_parameters["bill_no"] = bill_no


def new_bill(case):
    case.body = {"out_bill_no": fresh("B"), "payer_kind": "id_number", "payer": ALICE_ID, "title": "visit",
                 "items": [{"name": "x-ray", "amount": cny(3000)}], "insured": cny(0), "due_at": int(time.time()) + 86400}


def new_resident(case):
    n = next(serial)
    case.body = {"city": 330100, "name": "Zhang San", "mobile": "139%08d" % n, "id_number": id_number(1000 + n), "password": PASSWORD}


def new_merchant(case):
    case.body = {"city": 330100, "name": "Tea House", "uscc": uscc(next(serial)), "mcc": "5812", "category": "restaurant",
                 "settlement_account": "6222020200112233446"}


def new_card_holder(case):
    case.body = {"card_number": card_number(next(serial)), "name": ALICE.name, "id_number": ALICE_ID}


def link_card(case):
    card = card_number(next(serial))
    call("POST", "/v1/sandbox-bank/card-holders", auth=PLATFORM, body={"card_number": card, "name": ALICE.name, "id_number": ALICE_ID}, key=fresh("issue"))
    case.body = {"card_number": card}


def new_validator(case):
    case.body = {"route_id": "824", "stop_id": "B_XIZHAN", "device_key": public_hex(Ed25519PrivateKey.generate())}


def taps(case):
    case.path_parameters["id"] = VALIDATOR.id
    case.body = {"taps": [{"sequence": next(SEQUENCES), "account_ref": ACCOUNT_REF, "direction": "in", "time": int(time.time()), "code_hash": "22" * 32}]}


def validator_id(case):
    case.path_parameters["id"] = VALIDATOR.id


def window(year):
    return {"city": 330100, "year": year, "bureau_id": BUREAU_ID, "amount": cny(38_000), "opens_at": NOW - 60, "closes_at": NOW + 86400}


def contribution(case):
    year = next(YEARS)
    call("POST", "/v1/contribution-windows", auth=PLATFORM, body=window(year))
    case.body = {"city": 330100, "id_number": ALICE_ID, "year": year}


def new_window(case):
    case.body = window(next(YEARS))


def new_city(case):
    code = next(CITY_CODES, None)
    if code is not None:  # once every code listed is onboarded, the case keeps what was generated
        case.body = {"code": code, "name": "Somewhere"}


def query(**values):
    def fill(case):
        case.query = dict(values)
    return fill


def path(**values):
    def fill(case):
        case.path_parameters.update(values)
    return fill


def body(**values):
    def fill(case):
        case.body = dict(values)
    return fill


def both(*fills):
    def fill(case):
        for f in fills:
            f(case)
    return fill


nothing = None
ALICE_T = lambda: ALICE.token
KEEPER_T = lambda: KEEPER.token
MOTHER_T = lambda: MOTHER.token
# Operation -> (who calls it, how a valid case gets real values).
OPERATIONS = {
    "GET /health": (None, nothing),
    "GET /metrics": (None, nothing),
    "GET /openapi.json": (None, nothing),
    "GET /v1/receipt-keys": (None, nothing),
    "GET /v1/gateway/public-key": (None, query()),
    "POST /v1/residents": (None, new_resident),
    "POST /v1/sessions": (None, lambda case: setattr(case, "body", {"mobile": ALICE.mobile, "password": PASSWORD, "client_ticket": ALICE.ticket})),
    "POST /v1/cookie-sessions": (None, lambda case: setattr(case, "body", {"mobile": ALICE.mobile, "password": PASSWORD, "client_ticket": ALICE.ticket})),
    # Signs out a session of its own, fresh for each case.
    "DELETE /v1/cookie-sessions/current": (lambda: KEEPER.sign_in()[0], nothing),
    "POST /v1/operator-sessions": (None, lambda case: setattr(case, "body", {"username": "root", "password": OPERATOR_PASSWORD, "client_ticket": TICKETS["root"]})),
    # Residents.
    "GET /v1/wallet": (ALICE_T, nothing),
    "POST /v1/wallet/cards": (ALICE_T, link_card),
    "GET /v1/wallet/cards": (ALICE_T, nothing),
    "POST /v1/wallet/top-ups": (ALICE_T, lambda case: setattr(case, "body", {"card_id": ALICE_CARD, "amount": cny(1000)})),
    "POST /v1/wallet/withdrawals": (ALICE_T, lambda case: setattr(case, "body", {"card_id": ALICE_CARD, "amount": cny(100)})),
    "GET /v1/payment-devices": (ALICE_T, nothing),
    "POST /v1/payment-devices": (ALICE_T, nothing),
    "DELETE /v1/payment-devices/{device}": (ALICE_T, revoke_device),
    "POST /v1/payments/qr": (ALICE_T, pay_qr),
    "POST /v1/payments/qr/preview": (ALICE_T, pay_qr),
    "POST /v1/transfer-recipients": (MOTHER_T, lambda case: setattr(case, "body", {"mobile": ALICE.mobile})),
    "POST /v1/transfers": (ALICE_T, lambda case: setattr(case, "body", {"mobile": MOTHER.mobile, "amount": cny(100), "note": "fuzz"})),
    "GET /v1/transfers": (ALICE_T, query(limit=10)),
    "GET /v1/my/bills": (ALICE_T, query(limit=10)),
    "POST /v1/my/bills/{bill_no}/payments": (ALICE_T, pay_bill),
    "POST /v1/my/bills/{bill_no}/fund-consent": (ALICE_T, consent),
    "POST /v1/my/bills/{bill_no}/fund-claims": (ALICE_T, claim),
    "GET /v1/my/payer-links": (ALICE_T, nothing),
    "POST /v1/my/payer-links": (ALICE_T, lambda case: setattr(case, "body", {"payer_kind": "student_number", "payer": fresh("S"), "biller_id": SCHOOL_ID, "label": "son"})),
    "GET /v1/my/payer-link-requests": (MOTHER_T, nothing),
    "POST /v1/my/payer-link-requests/{requester}/approve": (MOTHER_T, path(requester=REQUESTER)),
    "POST /v1/my/payer-link-requests/{requester}/decline": (MOTHER_T, path(requester=REQUESTER)),
    "POST /v1/social-security/contributions": (ALICE_T, contribution),
    "GET /v1/receipts/{receipt_no}": (ALICE_T, path(receipt_no=RECEIPT)),
    "POST /v1/ride-credentials": (ALICE_T, lambda case: setattr(case, "body", {"rider_key": public_hex(Ed25519PrivateKey.generate())})),
    "POST /v1/transit/arrears-payments": (ALICE_T, nothing),
    "GET /v1/transit/my-day": (ALICE_T, query(date=RIDE_DAY)),
    "GET /v1/wallet/statement": (ALICE_T, query(limit=5)),
    "GET /v1/my/sessions": (KEEPER_T, nothing),
    "DELETE /v1/my/sessions/{session_id}": (KEEPER_T, keeper_session),
    "POST /v1/my/sessions/end-others": (KEEPER_T, nothing),
    "POST /v1/my/password": (KEEPER_T, keeper_password_change),
    "POST /v1/wallet/freeze": (KEEPER_T, nothing),
    "POST /v1/wallet/unfreeze": (KEEPER_T, lambda case: setattr(case, "body", {"password": KEEPER.password, "client_ticket": KEEPER.ticket})),
    # Merchants.
    "POST /v1/trades": (lambda: SHOP, new_trade),
    "GET /v1/trades": (lambda: SHOP, query(limit=5)),
    "GET /v1/trades/{out_trade_no}": (lambda: SHOP, path(out_trade_no=PAID_TRADE)),
    "POST /v1/trades/pay": (lambda: SHOP, pay_by_code),
    "POST /v1/trades/{out_trade_no}/refunds": (lambda: SHOP, refund),
    "GET /v1/trades/{out_trade_no}/refunds/{out_request_no}": (lambda: SHOP, path(out_trade_no=PAID_TRADE, out_request_no="R1")),
    "POST /v1/trades/{out_trade_no}/close": (lambda: SHOP, open_trade),
    "POST /v1/trades/{out_trade_no}/cancel": (lambda: SHOP, open_trade),
    "POST /v1/cash-sales": (lambda: SHOP, new_trade),
    "POST /v1/cashiers": (lambda: SHOP, lambda case: setattr(case, "body", {"name": "Li Na", "role": "cashier", "refund_limit": cny(5000), "password": PASSWORD})),
    "GET /v1/cashiers": (lambda: SHOP, nothing),
    "PATCH /v1/cashiers/{cashier_number}": (lambda: SHOP, lambda case: (path(cashier_number=SPARE_CASHIER)(case), setattr(case, "body", {"refund_limit": cny(2000)}))),
    "POST /v1/till/sessions": (None, lambda case: setattr(case, "body", {"cashier_number": str(CASHIER), "password": PASSWORD})),
    "GET /v1/till/me": (lambda: CASHIER_TOKEN, nothing),
    "POST /v1/till/trades": (lambda: CASHIER_TOKEN, new_trade),
    "POST /v1/till/code-payments": (lambda: CASHIER_TOKEN, pay_by_code),
    "POST /v1/till/cash-sales": (lambda: CASHIER_TOKEN, new_trade),
    "GET /v1/till/trades/{out_trade_no}": (lambda: CASHIER_TOKEN, path(out_trade_no=PAID_TRADE)),
    "GET /v1/till/shift": (lambda: CASHIER_TOKEN, query(date=today())),
    "POST /v1/till/trades/{out_trade_no}/refunds": (lambda: MANAGER_TOKEN, refund),
    "GET /v1/till/settlement-files/{date}": (lambda: MANAGER_TOKEN, path(date=today())),
    "GET /v1/merchant/qr": (lambda: SHOP, nothing),
    "GET /v1/merchant/refund-period": (lambda: SHOP, nothing),
    "PUT /v1/merchant/refund-period": (lambda: SHOP2, body(refund_period_s=30 * 86400)),
    "POST /v1/api-keys": (lambda: SHOP2, nothing),
    "POST /v1/api-keys/{key_id}/revoke": (lambda: SHOP, revoke_key),
    "GET /v1/gateway/apps": (lambda: SHOP, nothing),
    "POST /v1/gateway/apps": (lambda: SHOP, body(public_key=APP_PUBLIC_KEY)),
    "PATCH /v1/gateway/apps/{app_id}": (lambda: SHOP, both(path(app_id=APP_ID), body(disabled=False))),
    "GET /v1/settlement-files/{date}": (lambda: SHOP, path(date=today())),
    "POST /v1/bills": (lambda: HOSPITAL, new_bill),
    "GET /v1/bills/{out_bill_no}": (lambda: HOSPITAL, path(out_bill_no=SETUP_BILL_NO)),
    "POST /v1/bills/{out_bill_no}/cash-payments": (lambda: HOSPITAL, cash_bill),
    "GET /v1/reconciliation-files/{date}": (lambda: HOSPITAL, path(date=today())),
    "POST /v1/payer-guardians": (lambda: SCHOOL, lambda case: setattr(case, "body", {"payer_kind": "student_number", "payer": fresh("S"), "guardian_id_number": ALICE_ID})),
    # Transit operators and their validators.
    "POST /v1/validators": (lambda: TRANSIT, new_validator),
    "GET /v1/transit/revenue": (lambda: TRANSIT, query(date=RIDE_DAY)),
    "GET /v1/transit/legs": (lambda: TRANSIT, query(date=RIDE_DAY, limit=10)),
    "POST /v1/validators/{id}/taps": (VALIDATOR, taps),
    "GET /v1/validators/{id}/deny-list": (VALIDATOR, validator_id),
    "GET /v1/validators/{id}/ride-keys": (VALIDATOR, validator_id),
    # Platform and city operators.
    "POST /v1/cities": (lambda: PLATFORM, new_city),
    "GET /v1/city-stats": (lambda: CITY_OPERATOR, query(date=today())),
    "POST /v1/merchants": (lambda: PLATFORM, new_merchant),
    "POST /v1/merchants/{merchant_id}/api-keys": (lambda: PLATFORM, path(merchant_id=SHOP_ID)),
    "GET /v1/operator/merchants/{merchant_id}/gateway-apps": (lambda: PLATFORM, path(merchant_id=SHOP_ID)),
    "POST /v1/operator/merchants/{merchant_id}/gateway-apps": (lambda: PLATFORM, both(path(merchant_id=SHOP_ID), body(public_key=APP_PUBLIC_KEY))),
    "PATCH /v1/operator/merchants/{merchant_id}/gateway-apps/{app_id}": (lambda: PLATFORM, both(path(merchant_id=SHOP_ID, app_id=APP_ID), body(notify_url=None))),
    "POST /v1/in-person-verifications": (lambda: CITY_OPERATOR, body(id_number=ALICE_ID, name="Li Lei")),
    "POST /v1/sandbox-bank/card-holders": (lambda: PLATFORM, new_card_holder),
    "POST /v1/insurance-funds/{city}/deposits": (lambda: PLATFORM, lambda case: (case.path_parameters.update(city=330100), setattr(case, "body", {"amount": cny(10_000), "reference": fresh("NHSA")}))),
    "POST /v1/contribution-windows": (lambda: PLATFORM, new_window),
    "POST /v1/settlement-runs": (lambda: PLATFORM, body(date=today(-2))),
    "POST /v1/transit/fare-runs": (lambda: PLATFORM, body(date=RIDE_DAY)),
    "GET /v1/transit/ride-keys": (lambda: PLATFORM, nothing),
    "POST /v1/transit/ride-keys": (lambda: PLATFORM, body(overlap_hours=48)),
    # An id no key has: revoking real ones is the cluster test's.
    "POST /v1/transit/ride-keys/{id}/revocation": (lambda: PLATFORM, path(id=65000)),
}
generated = {}


@schemathesis.hook
def before_call(context, case, kwargs):
    label = "%s %s" % (case.operation.method.upper(), case.operation.path)
    caller, fill = OPERATIONS[label]
    positive = case.meta is None or not case.meta.generation.mode.is_negative
    count = generated[label] = generated.get(label, 0) + 1
    # Every other valid case gets real values; the others keep what was generated.
    if positive and fill is not None and count % 2 == 1:
        if case.path_parameters is None:
            case.path_parameters = {}
        fill(case)
        if any(p["in"] == "header" and p["name"].lower() == "idempotency-key" for p in case.operation.definition.raw.get("parameters", [])):
            case.headers = dict(case.headers or {}, **{"Idempotency-Key": fresh("k")})
    if isinstance(caller, Validator):
        kwargs["auth"] = caller
    elif caller is not None:
        case.headers = dict(case.headers or {}, Authorization=caller())


@schemathesis.hook
def after_call(context, case, response):
    label = "%s %s" % (case.operation.method.upper(), case.operation.path)
    LOG.write(json.dumps({"operation": label, "status": response.status_code}) + "\n")
    LOG.flush()
    # A sign-in's ticket keeps the next one out of the guessers' budget; the keeper's new
    # password is the one to send next.
    if 200 <= response.status_code < 300 and isinstance(case.body, dict):
        if label in ("POST /v1/sessions", "POST /v1/cookie-sessions") and case.body.get("mobile") == ALICE.mobile:
            ALICE.ticket = json.loads(response.content)["client_ticket"]
        elif label == "POST /v1/operator-sessions" and case.body.get("username") == "root":
            TICKETS["root"] = json.loads(response.content)["client_ticket"]
        elif label == "POST /v1/my/password" and case.body.get("current_password") == KEEPER.password:
            KEEPER.password = case.body["new_password"]
