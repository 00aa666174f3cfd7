// Kept identical to the example in README.md; test/sdk.test.ts checks that and runs it.
import {
  EventType,
  InterestTreeClient,
  InvalidArgumentError,
  itemName,
  timestampFromDate,
  userName,
} from "@interesttree/client";

const client = new InterestTreeClient(process.env.INTEREST_TREE_URL ?? "http://127.0.0.1:50051");
try {
  const books = [
    ["dune", "Dune", ["Books", "Science fiction", "Space opera"]],
    ["hyperion", "Hyperion", ["Books", "Science fiction", "Space opera"]],
    ["neuromancer", "Neuromancer", ["Books", "Science fiction", "Cyberpunk"]],
    ["snow-crash", "Snow Crash", ["Books", "Science fiction", "Cyberpunk"]],
    ["rebecca", "Rebecca", ["Books", "Mystery", "Gothic"]],
  ] as const;
  await client.upsertItems(
    books.map(([id, title, path]) => ({ name: itemName(id), title, categories: [...path] })),
  );
  const reader = userName("reader-2");
  await client.recordEvents(
    ["dune", "hyperion", "neuromancer"].map((id, day) => ({
      user: reader,
      item: itemName(id),
      type: EventType.LIKE,
      eventTime: timestampFromDate(new Date(Date.UTC(2024, 0, 1 + day))),
    })),
  );
  const tree = await client.buildInterestTree(reader);
  for (const node of tree.nodes) {
    console.log(`${"  ".repeat(node.level - 1)}${node.label} (${Math.round(node.weight * 100)}%)`);
  }
  const { recommendations } = await client.recommend(reader, { pageSize: 3 });
  for (const rec of recommendations) {
    console.log("recommended:", rec.item, rec.score.toFixed(3), rec.reason);
  }
  try {
    await client.getItem("books/1");
  } catch (error) {
    if (!(error instanceof InvalidArgumentError)) throw error;
    console.log("rejected:", error.reason, error.fieldViolations.map((v) => v.field));
  }
} finally {
  client.close();
}
