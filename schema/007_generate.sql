-- 007_generate.sql: the training objective of a stored model. 'retrieval': TokenRec's head
-- into CF space (finetune stage); 'generate': the decoder generates the target item's token
-- tuple through an LM head tied to the item-token embeddings (finetune-gen stage, the
-- beam-search baseline of evaluate --method generate).
ALTER TABLE models ADD COLUMN objective TEXT NOT NULL DEFAULT 'retrieval';
