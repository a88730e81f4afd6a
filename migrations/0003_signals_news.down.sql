DROP TABLE news_articles;
DROP TABLE signals;
DROP TYPE signal_direction;
