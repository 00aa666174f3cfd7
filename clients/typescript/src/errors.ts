// Exceptions decoded from the `google.rpc.Status` the server sends with every error (AIP-193):
// ErrorInfo (a machine-readable reason), BadRequest (one violation per invalid field) and
// ResourceInfo (which resource is missing).
import { Code, ConnectError } from "@connectrpc/connect";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  ResourceInfoSchema,
} from "./gen/google/rpc/error_details_pb.js";

export interface FieldViolation {
  field: string;
  description: string;
}

export interface ErrorDetails {
  reason: string;
  domain: string;
  metadata: Record<string, string>;
  fieldViolations: FieldViolation[];
  resourceType: string;
  resourceName: string;
  requestId: string;
  attempts: number;
}

/** A failed call. Subclasses name the status codes callers usually handle. */
export class InterestTreeError extends Error implements ErrorDetails {
  readonly code: Code;
  readonly reason: string;
  readonly domain: string;
  readonly metadata: Record<string, string>;
  readonly fieldViolations: FieldViolation[];
  readonly resourceType: string;
  readonly resourceName: string;
  readonly requestId: string;
  readonly attempts: number;

  constructor(code: Code, message: string, details: ErrorDetails, options?: { cause?: unknown }) {
    super(`${Code[code]}: ${message}${details.reason ? ` [${details.reason}]` : ""}`, options);
    this.name = new.target.name;
    this.code = code;
    this.reason = details.reason;
    this.domain = details.domain;
    this.metadata = details.metadata;
    this.fieldViolations = details.fieldViolations;
    this.resourceType = details.resourceType;
    this.resourceName = details.resourceName;
    this.requestId = details.requestId;
    this.attempts = details.attempts;
  }

  /** The gRPC status code's name, e.g. "INVALID_ARGUMENT". */
  get codeName(): string {
    return Code[this.code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
  }
}

/** The request is invalid; `fieldViolations` names every offending field. */
export class InvalidArgumentError extends InterestTreeError {}
/** A named resource does not exist; `resourceName` says which. */
export class NotFoundError extends InterestTreeError {}
/** The service (or its language model) cannot answer now; retried for idempotent calls. */
export class UnavailableError extends InterestTreeError {}
/** The service is overloaded; retried for idempotent calls. */
export class ResourceExhaustedError extends InterestTreeError {}
/** The deadline passed before an answer (all retries included). */
export class DeadlineExceededError extends InterestTreeError {}

const BY_CODE: Partial<Record<Code, typeof InterestTreeError>> = {
  [Code.InvalidArgument]: InvalidArgumentError,
  [Code.NotFound]: NotFoundError,
  [Code.Unavailable]: UnavailableError,
  [Code.ResourceExhausted]: ResourceExhaustedError,
  [Code.DeadlineExceeded]: DeadlineExceededError,
};

/** Turns anything a call threw into the matching `InterestTreeError`. */
export function errorFromCall(
  thrown: unknown,
  requestId = "",
  attempts = 1,
): InterestTreeError {
  const error = ConnectError.from(thrown);
  const details: ErrorDetails = {
    reason: "",
    domain: "",
    metadata: {},
    fieldViolations: [],
    resourceType: "",
    resourceName: "",
    requestId,
    attempts,
  };
  const [info] = error.findDetails(ErrorInfoSchema);
  if (info) {
    details.reason = info.reason;
    details.domain = info.domain;
    details.metadata = { ...info.metadata };
  }
  for (const bad of error.findDetails(BadRequestSchema)) {
    for (const violation of bad.fieldViolations) {
      details.fieldViolations.push({ field: violation.field, description: violation.description });
    }
  }
  const [resource] = error.findDetails(ResourceInfoSchema);
  if (resource) {
    details.resourceType = resource.resourceType;
    details.resourceName = resource.resourceName;
  }
  const Kind = BY_CODE[error.code] ?? InterestTreeError;
  return new Kind(error.code, error.rawMessage, details, { cause: error });
}
