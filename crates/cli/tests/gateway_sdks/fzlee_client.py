"""A merchant's code on python-alipay-sdk 3.4.0 (PyPI; import name `alipay`), one operation a run.

The gateway test runs it with target/gateway-sdks/fzlee/bin/python, writes one JSON object on
its stdin ({"gateway", "app_id", "app_private_key", "platform_public_key", "op", ...}) and reads
one JSON line from its stdout:
  op "call": {"method", "biz", "notify_url"?} -> {"ok": true, "response": {...}} (the dict the
      SDK returned, after it checked the signature), or {"ok": false, "error": "<exception
      class>", "message": "..."} when the SDK raised (bad signature, missing sign, HTTP error);
  op "verify_notification": {"form": "<raw form body>"} -> {"ok": true, "verified": bool,
      "fields": {...}}.
The SDK has no gateway option: `_gateway` is set after construction. It sends everything as a
GET query string. A call goes through the method's api_* function (api_alipay_trade_pay...) with
the biz fields and notify_url as keywords when that function takes them all; otherwise (no such
function, a field it lacks such as query_options, a notify_url that refund or query do not take,
a missing required field) through the SDK's generic server_api(method, biz_content, notify_url=).
"""

import inspect
import json
import sys
from urllib.parse import parse_qs

from alipay import AliPay


def main():
    args = json.load(sys.stdin)
    alipay = AliPay(
        appid=args["app_id"],
        app_notify_url=None,
        app_private_key_string=args["app_private_key"],
        alipay_public_key_string=args["platform_public_key"],
        sign_type="RSA2",
        debug=False,
    )
    alipay._gateway = args["gateway"]

    if args["op"] == "call":
        method, biz = args["method"], args["biz"]
        extra = {"notify_url": args["notify_url"]} if args.get("notify_url") else {}
        api = getattr(alipay, "api_" + method.replace(".", "_"), None)
        try:
            signature = inspect.signature(api)
            signature.bind(**biz, **extra)
            # refund's **kwargs would put notify_url into biz_content
            if extra and "notify_url" not in signature.parameters:
                api = None
        except TypeError:  # no api_* function, or it cannot take these fields
            api = None
        try:
            if api is None:
                response = alipay.server_api(method, biz_content=biz, **extra)
            else:
                response = api(**biz, **extra)
        except Exception as e:
            return {"ok": False, "error": type(e).__name__, "message": str(e)}
        return {"ok": True, "response": response}

    if args["op"] == "verify_notification":
        fields = {k: v[0] for k, v in parse_qs(args["form"], keep_blank_values=True).items()}
        data = dict(fields)
        sign = data.pop("sign", None)
        try:
            verified = sign is not None and alipay.verify(data, sign)
        except Exception as e:
            return {"ok": False, "error": type(e).__name__, "message": str(e)}
        return {"ok": True, "verified": verified, "fields": fields}

    raise SystemExit("unknown op: " + args["op"])


if __name__ == "__main__":
    print(json.dumps(main(), ensure_ascii=False))
