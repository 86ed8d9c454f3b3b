var sprite1 = createSprite(200, 200);
drawSprites();
background("gray");
rect(100, 100, 50, 50);
