"""Calls a running citypay server through the client that openapi-python-client generated
from its /openapi.json: one route per kind of caller. Run by crates/cli/tests/openapi_client.rs,
which generates the client, sets up the callers and passes them in the environment."""

import datetime
import os
import sys

from citypay_client import AuthenticatedClient, Client
from citypay_client.api.bills import my_bills
from citypay_client.api.operations import health_check
from citypay_client.api.operators import city_stats
from citypay_client.api.operators import sign_in as operator_sign_in
from citypay_client.api.residents import sign_in as resident_sign_in
from citypay_client.api.trades import list_ as list_trades
from citypay_client.api.transit import deny_list
from citypay_client.api.wallet import wallet
from citypay_client.models import OperatorSignIn, SignInRequest

base = os.environ["CITYPAY_BASE"]
anonymous = Client(base_url=base, raise_on_unexpected_status=True)
today = datetime.date.today().isoformat()


def ok(name, response):
    if response.status_code != 200 or response.parsed is None:
        sys.exit(f"{name}: {response.status_code} {response.content!r}")
    print(f"{name}: {response.status_code}")
    return response.parsed


ok("anonymous GET /health", health_check.sync_detailed(client=anonymous))

# A resident signs in, reads the wallet and lists bills (a query parameter).
session = ok("resident sign-in", resident_sign_in.sync_detailed(client=anonymous, body=SignInRequest(mobile=os.environ["RESIDENT_MOBILE"], password=os.environ["RESIDENT_PASSWORD"])))
resident = AuthenticatedClient(base_url=base, token=session.token)
ok("resident GET /v1/wallet", wallet.sync_detailed(client=resident))
ok("resident GET /v1/my/bills?limit=5", my_bills.sync_detailed(client=resident, limit=5))

# An operator signs in and reads a day's statistics (the date is a query parameter).
session = ok("operator sign-in", operator_sign_in.sync_detailed(client=anonymous, body=OperatorSignIn(username="root", password=os.environ["OPERATOR_PASSWORD"])))
operator = AuthenticatedClient(base_url=base, token=session.token)
ok("operator GET /v1/city-stats?date=", city_stats.sync_detailed(client=operator, date=today))

# A merchant with its API key (`Authorization: ApiKey <id>:<secret>`) pages its trades.
merchant = AuthenticatedClient(base_url=base, token=os.environ["MERCHANT_KEY"], prefix="ApiKey")
ok("merchant GET /v1/trades?limit=10", list_trades.sync_detailed(client=merchant, limit=10))

# A validator signs its call with its device key (the test computed the header).
validator = Client(base_url=base, headers={"Authorization": os.environ["VALIDATOR_AUTHORIZATION"]})
ok("validator GET /v1/validators/{id}/deny-list", deny_list.sync_detailed(client=validator, id=int(os.environ["VALIDATOR_ID"])))
