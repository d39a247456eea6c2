CREATE TYPE "public"."kb_article_status" AS ENUM('draft', 'in_review', 'published', 'retired');--> statement-breakpoint
CREATE TABLE "kb_articles" (
	"id" serial PRIMARY KEY NOT NULL,
	"article_number" text NOT NULL,
	"title" text NOT NULL,
	"body" text NOT NULL,
	"status" "kb_article_status" DEFAULT 'draft' NOT NULL,
	"source_case_number" text,
	"author" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "kb_articles_article_number_unique" UNIQUE("article_number")
);