"""The approval: the binding document's digest signed by the user's passkey, the receipt that
proves it, and enrollment of passkeys (embedded mode)."""

from ciba_service.server.approval.assertion import VerifiedApproval, authentication_options, verify_approval
from ciba_service.server.approval.enrollment import Enrollments, registration_options, verify_enrollment
from ciba_service.server.approval.flow import Approvals
from ciba_service.server.approval.receipt import reverify_receipt

__all__ = [
    "Approvals",
    "Enrollments",
    "VerifiedApproval",
    "authentication_options",
    "registration_options",
    "reverify_receipt",
    "verify_approval",
    "verify_enrollment",
]
