// Node.js client for the interest-tree gRPC API (interesttree.v1).
export {
  DEFAULT_DEADLINES_MS,
  DEFAULT_RETRY,
  InterestTreeClient,
  REQUEST_ID_HEADER,
  itemName,
  treeName,
  userName,
  type CallOptions,
  type ClientOptions,
  type EventInit,
  type ItemInit,
  type PageOptions,
  type RetryPolicy,
  type RpcName,
} from "./client.js";
export {
  DeadlineExceededError,
  InterestTreeError,
  InvalidArgumentError,
  NotFoundError,
  ResourceExhaustedError,
  UnavailableError,
  errorFromCall,
  type ErrorDetails,
  type FieldViolation,
} from "./errors.js";
export * from "./gen/interesttree/v1/admin_pb.js";
export * from "./gen/interesttree/v1/catalog_pb.js";
export * from "./gen/interesttree/v1/interest_pb.js";
export * from "./gen/interesttree/v1/recommendation_pb.js";
export { timestampFromDate, timestampDate } from "@bufbuild/protobuf/wkt";
export { Code } from "@connectrpc/connect";
