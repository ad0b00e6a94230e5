module posttrain/gotemplate

go 1.19
