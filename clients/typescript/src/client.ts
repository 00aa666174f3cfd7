// A thin client over the generated service descriptors and Connect's gRPC transport.
//
// What it adds to the raw Connect clients (still reachable as `client.catalog` and so on):
// - every call gets the default deadline its RPC documents unless `timeoutMs` says otherwise;
//   a retried call keeps one deadline for all its attempts;
// - idempotent calls are retried with exponential backoff and full jitter, only on UNAVAILABLE
//   and RESOURCE_EXHAUSTED. RecordEvents is made idempotent by an idempotency key the client
//   fills in when the caller gives none; DeleteItems only with allowMissing;
//   BuildInterestTree and BatchBuildInterestTrees (each call stores new revisions) never;
// - `iter*` helpers walk paginated lists;
// - errors come out as `InterestTreeError` subclasses carrying the decoded google.rpc details;
// - every call sends an `x-request-id` (one per call, kept across retries) that the server
//   puts in its logs; errors carry it too;
// - `apiKey` sends `authorization: Bearer <key>` with every call, and `tls` gives an `https://`
//   base URL the CA to trust and the client certificate for mutual TLS.
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";

import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";

import { errorFromCall } from "./errors.js";
import { AdminService, type RefreshModelsResponse } from "./gen/interesttree/v1/admin_pb.js";
import {
  CatalogService,
  type Item,
  type ItemSchema,
  type ListItemsResponse,
} from "./gen/interesttree/v1/catalog_pb.js";
import {
  InterestService,
  type BatchBuildInterestTreesResponse,
  type EventSchema,
  type ExplainInterestsResponse,
  type InterestTree,
  type InterestTreeRevision,
  type ListInterestTreeRevisionsResponse,
  type DeleteUserResponse,
  type ListTaxonomyNodesResponse,
  type TaxonomyNode,
} from "./gen/interesttree/v1/interest_pb.js";
import {
  RecommendationService,
  type ListSimilarItemsResponse,
  type RecommendByInterestResponse,
  type RecommendResponse,
  type SimilarItem,
} from "./gen/interesttree/v1/recommendation_pb.js";

export const REQUEST_ID_HEADER = "x-request-id";

/** The default deadline each RPC's comment in proto/interesttree/v1 documents, in ms. */
export const DEFAULT_DEADLINES_MS = {
  UpsertItems: 60_000,
  GetItem: 5_000,
  ListItems: 10_000,
  DeleteItems: 30_000,
  RecordEvents: 30_000,
  BuildInterestTree: 120_000,
  GetInterestTree: 5_000,
  ExplainInterests: 120_000,
  ListInterestTreeRevisions: 10_000,
  BatchBuildInterestTrees: 3_600_000,
  ListTaxonomyNodes: 10_000,
  DeleteUser: 30_000,
  Recommend: 120_000,
  RecommendByInterest: 120_000,
  ListSimilarItems: 10_000,
  RefreshModels: 300_000,
} as const;

export type RpcName = keyof typeof DEFAULT_DEADLINES_MS;

const RETRYABLE = new Set([Code.Unavailable, Code.ResourceExhausted]);

/** Exponential backoff with full jitter, so that many clients do not retry in lockstep. */
export interface RetryPolicy {
  maxAttempts: number;
  initialBackoffMs: number;
  maxBackoffMs: number;
  multiplier: number;
}

export const DEFAULT_RETRY: RetryPolicy = {
  maxAttempts: 4,
  initialBackoffMs: 100,
  maxBackoffMs: 2_000,
  multiplier: 2,
};

export interface CallOptions {
  /** Deadline for the whole call, retries included; default: the RPC's documented one. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** The filters of ListSimilarItems, and its page size (0 means 10, at most 100). */
export interface SimilarItemsOptions {
  pageSize?: number;
  categories?: { categories: string[] }[];
  excludeItems?: string[];
  candidateItems?: string[];
}

export interface PageOptions {
  pageSize?: number;
  pageToken?: string;
}

/** TLS settings of an `https://` base URL (PEM text or bytes). */
export interface TlsOptions {
  /** CA certificates to trust instead of Node's defaults. */
  ca?: string | Buffer;
  /** Client certificate chain and its private key, for mutual TLS. */
  cert?: string | Buffer;
  key?: string | Buffer;
}

export interface ClientOptions {
  /** Retry policy for idempotent calls; `{ maxAttempts: 1 }` turns retries off. */
  retry?: Partial<RetryPolicy>;
  /** API key sent as `authorization: Bearer <key>` (use TLS off loopback). */
  apiKey?: string;
  tls?: TlsOptions;
}

export type ItemInit = MessageInitShape<typeof ItemSchema>;
export type EventInit = MessageInitShape<typeof EventSchema>;

export const userName = (userId: string): string => `users/${userId}`;
export const itemName = (itemId: string): string => `items/${itemId}`;
export const treeName = (user: string): string => `${user}/interestTree`;

interface RawCallOptions {
  timeoutMs: number;
  headers: Record<string, string>;
  signal?: AbortSignal;
}

export class InterestTreeClient {
  readonly catalog: Client<typeof CatalogService>;
  readonly interests: Client<typeof InterestService>;
  readonly recommender: Client<typeof RecommendationService>;
  readonly admin: Client<typeof AdminService>;
  private readonly sessions: Http2SessionManager;
  private readonly retry: RetryPolicy;
  private readonly auth: Record<string, string>;

  /** `baseUrl` is the server's address as a URL, e.g. `http://127.0.0.1:50051` (or
   * `https://…` for TLS, with `options.tls` for a private CA or mutual TLS). */
  constructor(baseUrl: string, options: ClientOptions = {}) {
    const tls = options.tls ?? {};
    this.sessions = new Http2SessionManager(baseUrl, undefined, {
      ...(tls.ca !== undefined ? { ca: tls.ca } : {}),
      ...(tls.cert !== undefined ? { cert: tls.cert } : {}),
      ...(tls.key !== undefined ? { key: tls.key } : {}),
    });
    this.auth = options.apiKey ? { authorization: `Bearer ${options.apiKey}` } : {};
    const transport = createGrpcTransport({ baseUrl, sessionManager: this.sessions });
    this.catalog = createClient(CatalogService, transport);
    this.interests = createClient(InterestService, transport);
    this.recommender = createClient(RecommendationService, transport);
    this.admin = createClient(AdminService, transport);
    this.retry = { ...DEFAULT_RETRY, ...options.retry };
  }

  /** Closes the HTTP/2 connection; calls after this fail. */
  close(): void {
    this.sessions.abort();
  }

  private async call<T>(
    rpc: RpcName,
    options: CallOptions | undefined,
    idempotent: boolean,
    send: (raw: RawCallOptions) => Promise<T>,
  ): Promise<T> {
    const deadline = Date.now() + (options?.timeoutMs ?? DEFAULT_DEADLINES_MS[rpc]);
    const requestId = randomUUID().replaceAll("-", "");
    const maxAttempts = idempotent ? this.retry.maxAttempts : 1;
    for (let attempt = 1; ; attempt++) {
      try {
        return await send({
          timeoutMs: Math.max(deadline - Date.now(), 1),
          headers: { [REQUEST_ID_HEADER]: requestId, ...this.auth },
          signal: options?.signal,
        });
      } catch (thrown) {
        const code = ConnectError.from(thrown).code;
        const ceiling = Math.min(
          this.retry.maxBackoffMs,
          this.retry.initialBackoffMs * this.retry.multiplier ** (attempt - 1),
        );
        const pause = Math.random() * ceiling;
        // A retry that could not start before the deadline would only turn the real error
        // into DEADLINE_EXCEEDED.
        if (!RETRYABLE.has(code) || attempt >= maxAttempts || Date.now() + pause >= deadline) {
          throw errorFromCall(thrown, requestId, attempt);
        }
        await sleep(pause, undefined, { signal: options?.signal });
      }
    }
  }

  // CatalogService -------------------------------------------------------------------------

  async upsertItems(items: ItemInit[], options?: CallOptions): Promise<Item[]> {
    const response = await this.call("UpsertItems", options, true, (raw) =>
      this.catalog.upsertItems({ items }, raw),
    );
    return response.items;
  }

  async getItem(name: string, options?: CallOptions): Promise<Item> {
    const response = await this.call("GetItem", options, true, (raw) =>
      this.catalog.getItem({ name }, raw),
    );
    if (!response.item) throw new Error("GetItem answered without an item");
    return response.item;
  }

  listItems(page: PageOptions = {}, options?: CallOptions): Promise<ListItemsResponse> {
    return this.call("ListItems", options, true, (raw) => this.catalog.listItems(page, raw));
  }

  /** Every item in name order, fetching pages as needed (`timeoutMs` is per page). */
  async *iterItems(page: { pageSize?: number } = {}, options?: CallOptions): AsyncGenerator<Item> {
    let pageToken = "";
    do {
      const response = await this.listItems({ ...page, pageToken }, options);
      yield* response.items;
      pageToken = response.nextPageToken;
    } while (pageToken);
  }

  async deleteItems(
    names: string[],
    { allowMissing = false }: { allowMissing?: boolean } = {},
    options?: CallOptions,
  ): Promise<number> {
    // Without allowMissing, a retry after a lost success would fail with NOT_FOUND.
    const response = await this.call("DeleteItems", options, allowMissing, (raw) =>
      this.catalog.deleteItems({ names, allowMissing }, raw),
    );
    return response.deletedCount;
  }

  // InterestService ------------------------------------------------------------------------

  /** Records a batch; returns how many events were new (0 for a replayed requestId). */
  async recordEvents(
    events: EventInit[],
    { requestId }: { requestId?: string } = {},
    options?: CallOptions,
  ): Promise<number> {
    // The key makes a retried batch record nothing twice, which is what lets it be retried.
    const key = requestId || randomUUID();
    const response = await this.call("RecordEvents", options, true, (raw) =>
      this.interests.recordEvents({ events, requestId: key }, raw),
    );
    return response.recordedCount;
  }

  async buildInterestTree(user: string, options?: CallOptions): Promise<InterestTree> {
    const response = await this.call("BuildInterestTree", options, false, (raw) =>
      this.interests.buildInterestTree({ user }, raw),
    );
    if (!response.tree) throw new Error("BuildInterestTree answered without a tree");
    return response.tree;
  }

  /** The latest revision of `user`'s tree (`user` is `users/{id}`). */
  async getInterestTree(user: string, options?: CallOptions): Promise<InterestTree> {
    const response = await this.call("GetInterestTree", options, true, (raw) =>
      this.interests.getInterestTree({ name: treeName(user) }, raw),
    );
    if (!response.tree) throw new Error("GetInterestTree answered without a tree");
    return response.tree;
  }

  explainInterests(user: string, options?: CallOptions): Promise<ExplainInterestsResponse> {
    return this.call("ExplainInterests", options, true, (raw) =>
      this.interests.explainInterests({ user }, raw),
    );
  }

  listInterestTreeRevisions(
    user: string,
    page: PageOptions = {},
    options?: CallOptions,
  ): Promise<ListInterestTreeRevisionsResponse> {
    return this.call("ListInterestTreeRevisions", options, true, (raw) =>
      this.interests.listInterestTreeRevisions({ name: treeName(user), ...page }, raw),
    );
  }

  /** Every revision of `user`'s tree, newest first, with what changed in each. */
  async *iterInterestTreeRevisions(
    user: string,
    page: { pageSize?: number } = {},
    options?: CallOptions,
  ): AsyncGenerator<InterestTreeRevision> {
    let pageToken = "";
    do {
      const response = await this.listInterestTreeRevisions(user, { ...page, pageToken }, options);
      yield* response.revisions;
      pageToken = response.nextPageToken;
    } while (pageToken);
  }

  listTaxonomyNodes(page: PageOptions = {}, options?: CallOptions): Promise<ListTaxonomyNodesResponse> {
    return this.call("ListTaxonomyNodes", options, true, (raw) =>
      this.interests.listTaxonomyNodes(page, raw),
    );
  }

  async *iterTaxonomyNodes(
    page: { pageSize?: number } = {},
    options?: CallOptions,
  ): AsyncGenerator<TaxonomyNode> {
    let pageToken = "";
    do {
      const response = await this.listTaxonomyNodes({ ...page, pageToken }, options);
      yield* response.taxonomyNodes;
      pageToken = response.nextPageToken;
    } while (pageToken);
  }

  /** Streams one result per user as its tree is built. Never retried: a retry would store
   * second revisions for the users already built. */
  async *batchBuildInterestTrees(
    request: { users?: string[]; allUsers?: boolean },
    options?: CallOptions,
  ): AsyncGenerator<BatchBuildInterestTreesResponse> {
    const requestId = randomUUID().replaceAll("-", "");
    try {
      yield* this.interests.batchBuildInterestTrees(request, {
        timeoutMs: options?.timeoutMs ?? DEFAULT_DEADLINES_MS.BatchBuildInterestTrees,
        headers: { [REQUEST_ID_HEADER]: requestId, ...this.auth },
        signal: options?.signal,
      });
    } catch (thrown) {
      throw errorFromCall(thrown, requestId);
    }
  }

  /** Erases `user` (`users/{id}`): events, revisions, taxonomy references, and at the next
   * model refresh their influence on the learned models. Idempotent; needs the admin role. */
  deleteUser(user: string, options?: CallOptions): Promise<DeleteUserResponse> {
    return this.call("DeleteUser", options, true, (raw) =>
      this.interests.deleteUser({ name: user }, raw),
    );
  }

  // RecommendationService ------------------------------------------------------------------

  recommend(
    user: string,
    request: {
      pageSize?: number;
      levelWeights?: number[];
      includeSeen?: boolean;
      categories?: { categories: string[] }[];
      excludeItems?: string[];
      candidateItems?: string[];
      interestQuota?: number;
      /** With user "": an anonymous session's items, oldest first (a transient tree). */
      contextItems?: string[];
      /** An unknown user gets the popular list (`fallback` set) instead of NOT_FOUND. */
      allowFallback?: boolean;
    } = {},
    options?: CallOptions,
  ): Promise<RecommendResponse> {
    return this.call("Recommend", options, true, (raw) =>
      this.recommender.recommend({ user, ...request }, raw),
    );
  }

  /** One slate of items per interest node of `level` (0 = the deepest), heaviest first. */
  recommendByInterest(
    user: string,
    request: {
      level?: number;
      maxInterests?: number;
      pageSize?: number;
      includeSeen?: boolean;
      categories?: { categories: string[] }[];
      excludeItems?: string[];
      candidateItems?: string[];
    } = {},
    options?: CallOptions,
  ): Promise<RecommendByInterestResponse> {
    return this.call("RecommendByInterest", options, true, (raw) =>
      this.recommender.recommendByInterest({ user, ...request }, raw),
    );
  }

  /** One page of the items most similar to `item` (`items/{id}`), each with a reason naming
   * what it shares; pass a previous page's `nextPageToken` as `pageToken` for the next. */
  listSimilarItems(
    item: string,
    request: SimilarItemsOptions & { pageToken?: string } = {},
    options?: CallOptions,
  ): Promise<ListSimilarItemsResponse> {
    return this.call("ListSimilarItems", options, true, (raw) =>
      this.recommender.listSimilarItems({ item, ...request }, raw),
    );
  }

  /** The items most similar to `item`, most similar first (1,000 at most), fetching pages as
   * needed (`timeoutMs` is per page). */
  async *iterSimilarItems(
    item: string,
    request: SimilarItemsOptions = {},
    options?: CallOptions,
  ): AsyncGenerator<SimilarItem> {
    let pageToken = "";
    do {
      const response = await this.listSimilarItems(item, { ...request, pageToken }, options);
      yield* response.similarItems;
      pageToken = response.nextPageToken;
    } while (pageToken);
  }

  // AdminService ---------------------------------------------------------------------------

  refreshModels(options?: CallOptions): Promise<RefreshModelsResponse> {
    return this.call("RefreshModels", options, true, (raw) => this.admin.refreshModels({}, raw));
  }
}
