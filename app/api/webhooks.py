"""Delivery feedback webhooks: Amazon SES through SNS."""

from __future__ import annotations

import logging
from typing import Any

from flask import current_app
from flask import request

from app import db
from app.api.blueprint import public
from app.services import feedback
from app.services import sns

log = logging.getLogger(__name__)


@public.post("/webhooks/ses")
def ses_webhook() -> Any:
    """Take an SNS message: verify it, then confirm the subscription or apply the notification."""
    settings = current_app.config["SETTINGS"]
    # SNS posts JSON with `Content-Type: text/plain`, so the body is parsed whatever it says.
    message = sns.parse_message(request.get_data(),
                                type_header=request.headers.get("x-amz-sns-message-type"))
    sns.verify(message, topic_arns=settings.ses_sns_topic_arns,
               trusted_hosts=settings.ses_sns_trusted_hosts)
    if message.type == "SubscriptionConfirmation":
        sns.confirm_subscription(message, trusted_hosts=settings.ses_sns_trusted_hosts)
        return {"status": "confirmed"}
    if message.type == "UnsubscribeConfirmation":
        # Never resubscribe on our own: someone removed the subscription on purpose.
        log.info("sns_unsubscribed topic=%s", message.topic_arn)
        return {"status": "ignored"}
    outcome = feedback.apply_notification(db.session, delivery_id=message.message_id,
                                          message=message.message)
    db.session.commit()
    return {"status": outcome}
