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
GET query string. notify_url is a keyword of the api_* functions that take it (pay, precreate,
create...); a method without an api_* function, or with a notify_url its function does not
take, goes through the SDK's generic `server_api(method, biz_content, notify_url=...)`.
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
        notify_url = args.get("notify_url")
        api = getattr(alipay, "api_" + method.replace(".", "_"), None)
        if api is not None and notify_url and "notify_url" not in inspect.signature(api).parameters:
            api = None
        try:
            if api is None:
                extra = {"notify_url": notify_url} if notify_url else {}
                response = alipay.server_api(method, biz_content=biz, **extra)
            elif notify_url:
                response = api(notify_url=notify_url, **biz)
            else:
                response = api(**biz)
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
