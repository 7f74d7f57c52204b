-- 008: the tokenizer's quantizer form. 'parallel': K encoders and K codebooks (CLEAN, the
-- default); 'residual': one encoder, codebook k quantises the residual the codebooks before
-- it left (tokenize --quantizer residual). Tokenizers stored before this are parallel.
ALTER TABLE tokenizers ADD COLUMN quantizer TEXT NOT NULL DEFAULT 'parallel'
    CHECK (quantizer IN ('parallel', 'residual'));
